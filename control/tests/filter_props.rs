//! Property tests of the REST stream filter (control::registry): for random sessions and
//! random find/terminate bodies, `Filter::matches` is the AND of the given fields, and
//! selecting from a Registry returns exactly the matching sessions.

use std::collections::BTreeSet;

use control::registry::{Filter, FilterBody, Registry, SessionRecord};
use engine::Status;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NAMES: [&str; 3] = ["s1", "s2", "s3"];
const APPS: [&str; 2] = ["defaultApp", "other"];

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

/// A session as the test describes it (the registry assigns ids and media session ids).
#[derive(Debug, Clone)]
struct Spec {
    name: &'static str,
    published: bool,
    status: Status,
    app_key: &'static str,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(NAMES.to_vec()),
        any::<bool>(),
        status(),
        prop::sample::select(APPS.to_vec()),
    )
        .prop_map(|(name, published, status, app_key)| Spec {
            name,
            published,
            status,
            app_key,
        })
}

/// The fields of a filter body, drawn from the same small sets as the sessions so that
/// matches are common. Ids are `m<N>`, some of which exist.
#[derive(Debug, Clone)]
struct Query {
    name: Option<&'static str>,
    published: Option<bool>,
    status: Option<Status>,
    media_session_id: Option<String>,
    media_session_ids: Option<Vec<String>>,
    app_key: Option<&'static str>,
}

fn msid() -> impl Strategy<Value = String> {
    (1u64..14).prop_map(|n| format!("m{n}"))
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop::option::of(prop::sample::select(NAMES.to_vec())),
        prop::option::of(any::<bool>()),
        prop::option::of(status()),
        prop::option::of(msid()),
        prop::option::of(prop::collection::vec(msid(), 1..5)),
        prop::option::of(prop::sample::select(APPS.to_vec())),
    )
        .prop_map(
            |(name, published, status, media_session_id, media_session_ids, app_key)| Query {
                name,
                published,
                status,
                media_session_id,
                media_session_ids,
                app_key,
            },
        )
}

impl Query {
    /// The JSON body a REST client sends (so the wire names are tested too).
    fn body(&self) -> Value {
        let mut m = Map::new();
        if let Some(v) = self.name {
            m.insert("name".into(), json!(v));
        }
        if let Some(v) = self.published {
            m.insert("published".into(), json!(v));
        }
        if let Some(v) = self.status {
            m.insert("status".into(), json!(v.as_str()));
        }
        if let Some(v) = &self.media_session_id {
            m.insert("mediaSessionId".into(), json!(v));
        }
        if let Some(v) = &self.media_session_ids {
            m.insert("mediaSessionIds".into(), json!(v));
        }
        if let Some(v) = self.app_key {
            m.insert("appKey".into(), json!(v));
        }
        Value::Object(m)
    }

    fn filter(&self) -> Filter {
        let b: FilterBody = serde_json::from_value(self.body()).expect("body deserializes");
        Filter::from_body(b).expect("body is valid")
    }

    /// The reference: every given field equals the session's; with both mediaSessionId and
    /// mediaSessionIds, the id must be the one and be in the list.
    fn accepts(&self, r: &SessionRecord) -> bool {
        self.name.is_none_or(|n| n == r.name)
            && self.published.is_none_or(|p| p == r.published)
            && self.status.is_none_or(|s| s == r.status)
            && self.app_key.is_none_or(|a| a == r.app_key)
            && self
                .media_session_id
                .as_ref()
                .is_none_or(|id| *id == r.media_session_id)
            && self
                .media_session_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&r.media_session_id))
    }
}

/// Registers the specs that the registry admits (one publisher per name) and returns them.
fn populate(reg: &mut Registry, specs: &[Spec]) -> Vec<SessionRecord> {
    let mut out = Vec::new();
    for s in specs {
        let Ok((id, stream)) = reg.reserve(s.name, s.published) else {
            continue;
        };
        let mut r = SessionRecord::new(id, &format!("m{id}"), s.name, s.published, stream);
        r.status = s.status;
        r.app_key = s.app_key.into();
        r.create_date = id;
        r.shard = (id % 2) as usize;
        r.has_video = true;
        r.video_codec = Some("H264".into());
        reg.insert(r.clone());
        out.push(r);
    }
    out
}

fn ids<'a>(rs: impl IntoIterator<Item = &'a SessionRecord>) -> Vec<u64> {
    rs.into_iter().map(|r| r.id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn filter_matches_is_the_and_of_given_fields(
        specs in prop::collection::vec(spec(), 0..12),
        q in query(),
    ) {
        let mut reg = Registry::new(100, 100);
        let recs = populate(&mut reg, &specs);
        let f = q.filter();
        for r in &recs {
            prop_assert_eq!(f.matches(r), q.accepts(r), "{:?} on {:?}", q, r);
        }
        // Sessions that are not in the registry are judged the same way.
        let mut stray = recs.first().cloned();
        if let Some(r) = stray.as_mut() {
            r.media_session_id = "m99".into();
            prop_assert_eq!(f.matches(r), q.accepts(r));
        }
        let only_fields = q.name.is_none()
            && q.published.is_none()
            && q.status.is_none()
            && q.media_session_id.is_none()
            && q.media_session_ids.is_none()
            && q.app_key.is_none();
        prop_assert_eq!(f.is_empty(), only_fields);
    }

    /// find returns exactly the matching sessions, oldest first; terminating them (find,
    /// then remove each, as Core::terminate does) leaves exactly the others.
    #[test]
    fn find_and_terminate_select_exactly_the_matching_set(
        specs in prop::collection::vec(spec(), 0..16),
        q in query(),
    ) {
        let mut reg = Registry::new(100, 100);
        let recs = populate(&mut reg, &specs);
        let f = q.filter();
        let want: Vec<u64> = ids(recs.iter().filter(|r| q.accepts(r)));
        prop_assert_eq!(ids(reg.find(&f)), want);

        let stopped: Vec<u64> = ids(reg.find(&f));
        for id in &stopped {
            prop_assert!(reg.remove(*id).is_some());
        }
        let left: BTreeSet<u64> = ids(reg.find(&Filter::default())).into_iter().collect();
        let expect_left: BTreeSet<u64> =
            ids(recs.iter().filter(|r| !q.accepts(r))).into_iter().collect();
        prop_assert_eq!(left, expect_left);
        prop_assert!(reg.find(&f).is_empty());
        // The removed sessions are gone from the id index too.
        for r in recs.iter().filter(|r| q.accepts(r)) {
            prop_assert!(reg.by_media_session_id(&r.media_session_id).is_none());
        }
    }
}
