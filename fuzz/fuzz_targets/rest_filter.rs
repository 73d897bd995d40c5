//! control::registry::{FilterBody, Filter}: a REST find/terminate body as the server reads
//! it (serde_json::from_slice, then Filter::from_body), then `matches` against records,
//! compared with a predicate written from the FilterBody alone.
//!
//! Input: the JSON body.
#![no_main]

use control::registry::{Filter, FilterBody, SessionRecord};
use engine::Status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<FilterBody>(data) else {
        return;
    };
    let should_fail = body
        .status
        .as_deref()
        .is_some_and(|s| Status::parse(s).is_none())
        || body
            .media_session_ids
            .as_ref()
            .is_some_and(|v| v.is_empty())
        || body
            .display
            .as_ref()
            .is_some_and(|d| d.iter().any(|x| x != "metrics"));
    let f = match Filter::from_body(body.clone()) {
        Ok(f) => f,
        Err(e) => {
            assert!(should_fail, "valid body refused: {e}");
            return;
        }
    };
    assert!(!should_fail, "invalid body accepted: {body:?}");
    assert_eq!(f.all, body.all == Some(true));
    assert_eq!(
        f.metrics,
        body.display.as_ref().is_some_and(|d| !d.is_empty())
    );
    assert_eq!(
        f.is_empty(),
        body.name.is_none()
            && body.published.is_none()
            && body.status.is_none()
            && body.media_session_id.is_none()
            && body.media_session_ids.is_none()
            && body.app_key.is_none()
    );

    for r in records(&body) {
        assert_eq!(f.matches(&r), reference(&body, &r), "{body:?} vs {r:?}");
    }
});

/// All given fields must match; mediaSessionId and mediaSessionIds together mean the id
/// must equal the one and be in the list.
fn reference(b: &FilterBody, r: &SessionRecord) -> bool {
    b.name.as_ref().is_none_or(|n| *n == r.name)
        && b.published.is_none_or(|p| p == r.published)
        && b.status.as_ref().is_none_or(|s| s == r.status.as_str())
        && b.app_key.as_ref().is_none_or(|a| *a == r.app_key)
        && b.media_session_id
            .as_ref()
            .is_none_or(|id| *id == r.media_session_id)
        && b.media_session_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&r.media_session_id))
}

/// Fixed records plus ones built from the body's own values, so that matches happen.
fn records(b: &FilterBody) -> Vec<SessionRecord> {
    let mut v = vec![
        record("m1", "s1", true, Status::Publishing, "defaultApp"),
        record("m2", "s1", false, Status::Playing, "defaultApp"),
        record("", "", false, Status::New, ""),
    ];
    let name = b.name.clone().unwrap_or_default();
    let app = b.app_key.clone().unwrap_or_default();
    let status = b
        .status
        .as_deref()
        .and_then(Status::parse)
        .unwrap_or(Status::Failed);
    let mut ids: Vec<String> = b.media_session_ids.clone().unwrap_or_default();
    ids.extend(b.media_session_id.clone());
    ids.push("m1".into());
    for id in ids.iter().take(8) {
        for published in [false, true] {
            v.push(record(id, &name, published, status, &app));
        }
    }
    v
}

fn record(msid: &str, name: &str, published: bool, status: Status, app: &str) -> SessionRecord {
    let mut r = SessionRecord::new(1, msid, name, published, 1);
    r.status = status;
    r.app_key = app.into();
    r
}
