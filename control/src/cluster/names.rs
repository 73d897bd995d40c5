//! Stream names and node ids as NATS KV keys and subject tokens. NATS allows only
//! `[-/_=.A-Za-z0-9]` in keys and `.` separates subject tokens, so bytes other than
//! `[A-Za-z0-9_-]` become `=XX` (upper-case hex): injective, reversible, one token, and
//! ordinary names (`cam1`, `room-42_hd`) stay readable in `nats kv ls`.

/// Encodes `s` for a KV key or a single subject token.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for text [`encode`] cannot have produced.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_key(k: &str) -> bool {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn examples() {
        assert_eq!(encode("cam1"), "cam1");
        assert_eq!(encode("room-42_hd"), "room-42_hd");
        assert_eq!(encode("a.b/c d=é"), "a=2Eb=2Fc=20d=3D=C3=A9");
        assert_eq!(
            decode("a=2Eb=2Fc=20d=3D=C3=A9").as_deref(),
            Some("a.b/c d=é")
        );
        assert_eq!(decode("=4"), None);
        assert_eq!(decode("=ZZ"), None);
    }

    proptest! {
        #[test]
        fn round_trips_into_the_key_alphabet_without_dots(s in "\\PC{1,64}") {
            let e = encode(&s);
            prop_assert!(valid_key(&e), "{}", e);
            prop_assert!(!e.contains('.'));
            prop_assert_eq!(decode(&e), Some(s));
        }
    }
}
