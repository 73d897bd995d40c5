//! SRTP protect for RTP without allocating (RFC 3711 AES-CM + HMAC-SHA1, RFC 7714 AES-GCM):
//! AES-CM on the RustCrypto crates `webrtc-srtp` uses (`aes`, `ctr`, `hmac`, `sha1`), AES-GCM
//! on aws-lc (`aws-lc-rs`, str0m's crypto backend), whose GCM is ~3x faster here.
//!
//! `webrtc-srtp` 0.17 returns a new buffer from every call and keeps its key derivation
//! private, so this module has its own:
//! * [`kdf`]: the AES-CM PRF key derivation of RFC 3711 §4.3.3 with a key derivation rate of
//!   0 (the only one SDES here negotiates: `KDR=` is refused by the parser), checked against
//!   the RFC's appendix B.3 vectors.
//! * [`RtpProtector`]: session keys derived once, per-SSRC rollover counters (the same guess
//!   `webrtc-srtp`'s sender makes, so the two produce the same bytes), and protect in place.
//!
//! Unit tests here compare every output byte for byte with `webrtc-srtp`'s `encrypt_rtp` for
//! random keys, SSRCs, sizes, header extensions and sequence numbers across a ROC wrap, and
//! check that `webrtc-srtp` decrypts it.

use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128Enc, Aes256Enc};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{SrtpError, SrtpKeys, SrtpProfile, MAX_SSRCS};

type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;

/// AES-128 in counter mode from an already expanded key (no key schedule per packet).
fn keystream(aes: &Aes128Enc, iv: [u8; 16]) -> Aes128Ctr {
    Aes128Ctr::from_core(ctr::CtrCore::inner_iv_init(aes.clone(), &iv.into()))
}
/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), i = ROC || SEQ.
fn aes_cm_iv(salt: &[u8], ssrc: u32, roc: u32, seq: u16) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&roc.to_be_bytes());
    iv[12..14].copy_from_slice(&seq.to_be_bytes());
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    iv
}

/// RFC 3711 §4.2: HMAC(k_a, authenticated portion || ROC), truncated to 80 bits, written
/// after the `len` bytes of the packet in `buf`.
fn append_aes_cm_tag(auth: &HmacSha1, buf: &mut [u8], len: usize, roc: u32) {
    let mut mac = auth.clone();
    mac.update(&buf[..len]);
    mac.update(&roc.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    buf[len..len + AES_CM_TAG_LEN].copy_from_slice(&tag[..AES_CM_TAG_LEN]);
}

/// Where a packet to protect sits in its SSRC's sequence: what both protect paths need.
struct Index {
    seq: u16,
    ssrc: u32,
    /// Slot of the SSRC's state.
    si: usize,
    roc: u32,
    diff: i32,
}

type HmacSha1 = Hmac<Sha1>;

/// RFC 3711 §4.3.1 key derivation labels (SRTP only: SRTCP stays on `webrtc-srtp`).
pub(crate) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_RTP_AUTH: u8 = 0x01;
pub(crate) const LABEL_RTP_SALT: u8 = 0x02;

/// HMAC-SHA1 key length (RFC 3711 §4.2: n_a = 160 bits).
const AUTH_KEY_LEN: usize = 20;
/// Truncated HMAC-SHA1 tag of AES_CM_128_HMAC_SHA1_80.
const AES_CM_TAG_LEN: usize = 10;
const GCM_TAG_LEN: usize = 16;

/// AES-CM PRF (RFC 3711 §4.3.3) with key derivation rate 0: `out` is filled with the key
/// stream of AES-128(master key) in counter mode from `x * 2^16`, where `x` is the master salt
/// (zero-padded to 112 bits: RFC 7714's 96-bit GCM salts) with `label` XORed into byte 7 (the
/// `r = index DIV kdr` bytes after it are 0).
/// A 32-byte master key runs the PRF on AES-256 (RFC 6188 §3, which RFC 7714's
/// AEAD_AES_256_GCM uses).
pub(crate) fn kdf(label: u8, master_key: &[u8], master_salt: &[u8], out: &mut [u8]) {
    debug_assert!(master_salt.len() <= 14);
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    let mut blocks = |f: &dyn Fn(&mut aes::Block)| {
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            let mut block = x;
            block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
            let mut b = block.into();
            f(&mut b);
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    };
    match master_key.len() {
        32 => {
            let aes = Aes256Enc::new(master_key.into());
            blocks(&|b| aes.encrypt_block(b));
        }
        _ => {
            let aes = Aes128Enc::new(master_key[..16].into());
            blocks(&|b| aes.encrypt_block(b));
        }
    }
}

/// Length of an RTP header as SRTP sees it (fixed part, CSRCs, extension): what stays in the
/// clear. Fails if the packet is shorter than its header says.
pub(crate) fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    if pkt.len() < 12 {
        return Err(SrtpError::Malformed("too short for RTP/SRTP"));
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::Malformed("RTP version is not 2"));
    }
    let mut n = 12 + 4 * (pkt[0] & 0x0f) as usize;
    if pkt[0] & 0x10 != 0 {
        if pkt.len() < n + 4 {
            return Err(SrtpError::Malformed("too short for its header extension"));
        }
        n += 4 + 4 * u16::from_be_bytes([pkt[n + 2], pkt[n + 3]]) as usize;
    }
    if pkt.len() < n {
        return Err(SrtpError::Malformed("too short for its header"));
    }
    Ok(n)
}

// One per context, never moved per packet: both variants inline (no pointer chase per
// packet), whatever their size difference.
#[allow(clippy::large_enum_variant)]
enum RtpCipher {
    AesCm {
        /// Session encryption key, expanded once.
        aes: Aes128Enc,
        /// Session salt (k_s).
        salt: [u8; 14],
        /// HMAC-SHA1 keyed with the session auth key (inner and outer pads absorbed once;
        /// cloned per packet).
        auth: HmacSha1,
    },
    /// AES-128-GCM or AES-256-GCM (the key says which).
    Gcm { gcm: LessSafeKey, salt: [u8; 12] },
}

/// Sender-side rollover counter of one SSRC, tracked exactly like `webrtc-srtp`'s
/// `SrtpSsrcState` (`next_rollover_count` / `update_rollover_count`), so both pick the same
/// ROC for any sequence of packets, including reordered ones around a wrap.
#[derive(Debug, Clone, Copy)]
struct TxSsrc {
    ssrc: u32,
    index: u64,
    started: bool,
}

impl TxSsrc {
    /// (ROC to use for `seq`, index delta to apply after, 2^48 packets exhausted).
    fn next_roc(&self, seq: u16) -> (u32, i32, bool) {
        const MEDIAN: u16 = 1 << 15;
        let local_roc = (self.index >> 16) as u32;
        let local_seq = self.index as u16;
        let mut roc = local_roc;
        let diff = if self.started {
            let d = (seq as i32).wrapping_sub(local_seq as i32);
            if self.index > MEDIAN as u64 {
                if local_seq < MEDIAN {
                    if d > MEDIAN as i32 {
                        roc = local_roc.wrapping_sub(1);
                        d.wrapping_sub(1 << 16)
                    } else {
                        d
                    }
                } else if local_seq - MEDIAN > seq {
                    roc = local_roc.wrapping_add(1);
                    d.wrapping_add(1 << 16)
                } else {
                    d
                }
            } else {
                d
            }
        } else {
            0
        };
        (roc, diff, roc == 0 && local_roc == u32::MAX)
    }

    fn update(&mut self, seq: u16, diff: i32) {
        if !self.started {
            self.index |= seq as u64;
            self.started = true;
        } else {
            self.index = self.index.wrapping_add(diff as i64 as u64);
        }
    }
}

/// RFC 7714 §8.1 in place: IV = (0^16 || SSRC || ROC || SEQ) XOR salt, AAD = the header
/// `buf[..hl]`, payload `buf[hl..len]` encrypted, the 16-byte tag written at `buf[len..]`.
#[allow(clippy::too_many_arguments)]
fn gcm_seal(
    gcm: &LessSafeKey,
    salt: &[u8; 12],
    ssrc: u32,
    roc: u32,
    seq: u16,
    buf: &mut [u8],
    hl: usize,
    len: usize,
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    let (head, body) = buf.split_at_mut(hl);
    let tag = gcm
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(&*head),
            &mut body[..len - hl],
        )
        .map_err(|_| SrtpError::Malformed("too long for AES-GCM"))?;
    buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
    Ok(())
}

/// An AES-GCM session key, expanded once (aws-lc keeps the AES schedule and GHASH table).
fn gcm_key(alg: &'static aws_lc_rs::aead::Algorithm, key: &[u8]) -> Result<LessSafeKey, SrtpError> {
    let k = UnboundKey::new(alg, key).map_err(|_| SrtpError::Other("AES-GCM key".into()))?;
    Ok(LessSafeKey::new(k))
}

/// Protects RTP packets for one SRTP send direction without allocating.
pub(crate) struct RtpProtector {
    cipher: RtpCipher,
    ssrcs: Vec<TxSsrc>,
}

impl RtpProtector {
    /// Derives the SRTP session keys from `keys` (lengths already checked by the caller).
    pub(crate) fn new(keys: &SrtpKeys) -> Result<Self, SrtpError> {
        let mk = keys.key.as_slice();
        if mk.len() != keys.profile.key_len() {
            return Err(SrtpError::InvalidSdes("wrong master key length".into()));
        }
        if keys.salt.len() != keys.profile.salt_len() {
            return Err(SrtpError::InvalidSdes("wrong master salt length".into()));
        }
        let mut ke = [0u8; 16];
        if keys.profile != SrtpProfile::AeadAes256Gcm {
            kdf(LABEL_RTP_ENCRYPTION, mk, &keys.salt, &mut ke);
        }
        let cipher = match keys.profile {
            SrtpProfile::AesCm128HmacSha1_80 => {
                let mut salt = [0u8; 14];
                kdf(LABEL_RTP_SALT, mk, &keys.salt, &mut salt);
                let mut ka = [0u8; AUTH_KEY_LEN];
                kdf(LABEL_RTP_AUTH, mk, &keys.salt, &mut ka);
                RtpCipher::AesCm {
                    aes: Aes128Enc::new(&ke.into()),
                    salt,
                    auth: <HmacSha1 as Mac>::new_from_slice(&ka)
                        .map_err(|e| SrtpError::Other(e.to_string()))?,
                }
            }
            SrtpProfile::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                kdf(LABEL_RTP_SALT, mk, &keys.salt, &mut salt);
                RtpCipher::Gcm {
                    gcm: gcm_key(&AES_128_GCM, &ke)?,
                    salt,
                }
            }
            SrtpProfile::AeadAes256Gcm => {
                let mut ke = [0u8; 32];
                kdf(LABEL_RTP_ENCRYPTION, mk, &keys.salt, &mut ke);
                let mut salt = [0u8; 12];
                kdf(LABEL_RTP_SALT, mk, &keys.salt, &mut salt);
                RtpCipher::Gcm {
                    gcm: gcm_key(&AES_256_GCM, &ke)?,
                    salt,
                }
            }
        };
        Ok(RtpProtector {
            cipher,
            ssrcs: Vec::with_capacity(2),
        })
    }

    /// Bytes protecting adds.
    pub(crate) fn overhead(&self) -> usize {
        match self.cipher {
            RtpCipher::AesCm { .. } => AES_CM_TAG_LEN,
            RtpCipher::Gcm { .. } => GCM_TAG_LEN,
        }
    }

    /// The packet's SSRC state and rollover counter (the header is already validated).
    fn index(&mut self, pkt: &[u8]) -> Result<Index, SrtpError> {
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        let si = self.state(ssrc)?;
        let (roc, diff, exhausted) = self.ssrcs[si].next_roc(seq);
        if exhausted {
            return Err(SrtpError::KeyExhausted);
        }
        Ok(Index {
            seq,
            ssrc,
            si,
            roc,
            diff,
        })
    }

    fn state(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        if let Some(i) = self.ssrcs.iter().position(|s| s.ssrc == ssrc) {
            return Ok(i);
        }
        if self.ssrcs.len() >= MAX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        self.ssrcs.push(TxSsrc {
            ssrc,
            index: 0,
            started: false,
        });
        Ok(self.ssrcs.len() - 1)
    }

    /// Protects the RTP packet in `buf[..len]` in place; the tag goes to `buf[len..]`.
    /// Returns the protected length. `buf` must have room for the tag.
    pub(crate) fn protect_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SrtpError> {
        let out_len = len + self.overhead();
        if len > buf.len() {
            return Err(SrtpError::Malformed("length past the end of the buffer"));
        }
        if out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall { needed: out_len });
        }
        let hl = rtp_header_len(&buf[..len])?;
        let Index {
            seq,
            ssrc,
            si,
            roc,
            diff,
        } = self.index(buf)?;
        match &self.cipher {
            RtpCipher::AesCm { aes, salt, auth } => {
                let mut ks = keystream(aes, aes_cm_iv(salt, ssrc, roc, seq));
                ks.apply_keystream(&mut buf[hl..len]);
                append_aes_cm_tag(auth, buf, len, roc);
            }
            RtpCipher::Gcm { gcm, salt } => {
                gcm_seal(gcm, salt, ssrc, roc, seq, buf, hl, len)?;
            }
        }
        self.ssrcs[si].update(seq, diff);
        Ok(out_len)
    }

    /// Protects `pkt` into `out` (which needs `pkt.len() + overhead` bytes); `pkt` is
    /// untouched. AES-CM encrypts from `pkt` straight into `out` (no separate copy).
    pub(crate) fn protect_into(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let len = pkt.len();
        if out.len() < len + self.overhead() {
            return Err(SrtpError::BufferTooSmall {
                needed: len + self.overhead(),
            });
        }
        match self.cipher {
            RtpCipher::AesCm { .. } => {
                // Header copied, payload encrypted buffer to buffer, then the tag: the same
                // steps as in place, without reading the payload twice.
                let hl = rtp_header_len(pkt)?;
                out[..hl].copy_from_slice(&pkt[..hl]);
                self.protect_split(pkt, hl, out)
            }
            RtpCipher::Gcm { .. } => {
                out[..len].copy_from_slice(pkt);
                self.protect_in_place(out, len)
            }
        }
    }

    /// AES-CM only: `out[..hl]` already holds the header; encrypts `pkt[hl..]` into `out`.
    fn protect_split(&mut self, pkt: &[u8], hl: usize, out: &mut [u8]) -> Result<usize, SrtpError> {
        let len = pkt.len();
        let out_len = len + AES_CM_TAG_LEN;
        let Index {
            seq,
            ssrc,
            si,
            roc,
            diff,
        } = self.index(pkt)?;
        let RtpCipher::AesCm { aes, salt, auth } = &self.cipher else {
            unreachable!("protect_split is AES-CM only");
        };
        let mut ks = keystream(aes, aes_cm_iv(salt, ssrc, roc, seq));
        ks.apply_keystream_b2b(&pkt[hl..], &mut out[hl..len])
            .map_err(|_| SrtpError::Malformed("buffer length mismatch"))?;
        append_aes_cm_tag(auth, out, len, roc);
        self.ssrcs[si].update(seq, diff);
        Ok(out_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc_srtp::context::Context;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 appendix B.3 (key derivation test vectors).
    #[test]
    fn kdf_matches_rfc3711_b3() {
        let mk: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let ms = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut k = [0u8; 16];
        kdf(LABEL_RTP_ENCRYPTION, &mk, &ms, &mut k);
        assert_eq!(k.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0u8; 14];
        kdf(LABEL_RTP_SALT, &mk, &ms, &mut s);
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // The RFC lists 94 bytes of auth key output (for other tag sizes); its first 20 bytes
        // are the HMAC-SHA1 key.
        let mut a = [0u8; 94];
        kdf(LABEL_RTP_AUTH, &mk, &ms, &mut a);
        assert_eq!(
            a[..20].to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
        assert_eq!(a[20..32].to_vec(), hex("8F0A0ACF3C34E2359E6CDBCE"));
    }

    /// RFC 3711 appendix B.2 (AES-CM keystream): session key, salt, SSRC 0, index 0.
    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let salt = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&salt);
        let mut ks = keystream(&Aes128Enc::new(key.as_slice().into()), iv);
        let mut out = [0u8; 48];
        ks.apply_keystream(&mut out);
        assert_eq!(
            out.to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    /// xorshift64*: deterministic "random" test input without a dev-dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn webrtc(keys: &SrtpKeys) -> Context {
        let p = match keys.profile {
            SrtpProfile::AesCm128HmacSha1_80 => {
                webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
            }
            SrtpProfile::AeadAes128Gcm => {
                webrtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm
            }
            SrtpProfile::AeadAes256Gcm => {
                webrtc_srtp::protection_profile::ProtectionProfile::AeadAes256Gcm
            }
        };
        Context::new(&keys.key, &keys.salt, p, None, None).unwrap()
    }

    /// A random RTP packet: random CSRC count, sometimes a one- or two-byte-header extension
    /// (well-formed, so the `rtp` crate the library parses with sizes it the same), random
    /// marker/PT/timestamp and payload.
    fn random_packet(r: &mut Rng, seq: u16, ssrc: u32) -> Vec<u8> {
        let cc = if r.below(4) == 0 { r.below(4) as u8 } else { 0 };
        let ext = r.below(3);
        let mut p = vec![0x80 | cc | if ext > 0 { 0x10 } else { 0 }];
        p.push(r.next() as u8);
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(r.next() as u32).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        for _ in 0..cc {
            p.extend_from_slice(&(r.next() as u32).to_be_bytes());
        }
        match ext {
            1 => {
                // One-byte header: elements id 1..14, 1..16 bytes each, padded to words.
                let mut body = Vec::new();
                for _ in 0..=r.below(3) {
                    let len = 1 + r.below(16) as usize;
                    body.push(((1 + r.below(14) as u8) << 4) | (len as u8 - 1));
                    body.extend(r.bytes(len));
                }
                while body.len() % 4 != 0 {
                    body.push(0);
                }
                p.extend_from_slice(&[0xbe, 0xde]);
                p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
                p.extend(body);
            }
            2 => {
                // Two-byte header (0x1000).
                let mut body = Vec::new();
                for _ in 0..=r.below(2) {
                    let len = r.below(40) as usize;
                    body.push(1 + r.below(200) as u8);
                    body.push(len as u8);
                    body.extend(r.bytes(len));
                }
                while body.len() % 4 != 0 {
                    body.push(0);
                }
                p.extend_from_slice(&[0x10, 0x00]);
                p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
                p.extend(body);
            }
            _ => {}
        }
        let n = r.below(1400) as usize;
        p.extend(r.bytes(n));
        p
    }

    /// Byte-for-byte against `webrtc-srtp`'s encrypt_rtp, both suites, random keys / SSRCs /
    /// packets, sequence numbers running across a wrap (ROC 0 -> 1 -> 2) with reordering,
    /// loss and duplicates on the way; `webrtc-srtp` must decrypt every output.
    #[test]
    fn in_place_equals_webrtc_srtp_byte_for_byte() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for profile in SrtpProfile::ALL {
            for round in 0..12 {
                let master = r.bytes(profile.master_len());
                let keys = SrtpKeys::from_master(profile, &master);
                let mut ours = RtpProtector::new(&keys).unwrap();
                let mut reference = webrtc(&keys);
                let mut rx = webrtc(&keys);
                let ssrcs: Vec<u32> = (0..1 + r.below(3)).map(|_| r.next() as u32).collect();
                // Start near the wrap on odd rounds, anywhere on even ones.
                let mut seq: u16 = if round % 2 == 1 {
                    65_535 - r.below(300) as u16
                } else {
                    r.next() as u16
                };
                let steps = 600 + r.below(600) as usize;
                for i in 0..steps {
                    // Mostly +1; sometimes a loss burst, a late packet or a duplicate. Every
                    // few hundred packets jump ~2^15 forward so long runs cross more wraps.
                    let step: i32 = match r.below(40) {
                        0 => -(1 + r.below(20) as i32),
                        1 => 2 + r.below(50) as i32,
                        2 => 0,
                        _ => 1,
                    };
                    seq = (seq as i32 + step).rem_euclid(65_536) as u16;
                    if i % 250 == 249 {
                        seq = seq.wrapping_add(20_000);
                    }
                    let ssrc = ssrcs[r.below(ssrcs.len() as u64) as usize];
                    let pkt = random_packet(&mut r, seq, ssrc);
                    let want = reference.encrypt_rtp(&pkt).unwrap();
                    // Alternate the three entry points; they share the ROC state.
                    let mut out = vec![0xa5u8; pkt.len() + 40];
                    let n = match i % 3 {
                        0 => {
                            out[..pkt.len()].copy_from_slice(&pkt);
                            ours.protect_in_place(&mut out, pkt.len()).unwrap()
                        }
                        _ => ours.protect_into(&pkt, &mut out).unwrap(),
                    };
                    assert_eq!(
                        &out[..n],
                        &want[..],
                        "{profile} round {round} step {i} seq {seq} len {}",
                        pkt.len()
                    );
                    assert!(out[n..].iter().all(|&b| b == 0xa5), "wrote past the end");
                    // The library's receiver (no replay window) follows the same sequence,
                    // so it must guess the same ROC and decrypt every packet.
                    let plain = rx.decrypt_rtp(&out[..n]).unwrap();
                    assert_eq!(&plain[..], &pkt[..]);
                }
            }
        }
    }

    /// Sequences webrtc-srtp's receiver follows exactly (in order across two wraps): every
    /// packet must decrypt, none may be refused.
    #[test]
    fn in_order_across_wraps_always_decrypts() {
        for profile in SrtpProfile::ALL {
            let keys = SrtpKeys::generate(profile).unwrap();
            let mut ours = RtpProtector::new(&keys).unwrap();
            let mut rx = webrtc(&keys);
            let mut r = Rng(7);
            let mut seq = 65_000u16;
            for _ in 0..(2 * 65_536 + 2_000) / 97 {
                let pkt = random_packet(&mut r, seq, 0x1234_5678);
                let mut out = vec![0u8; pkt.len() + 16];
                let n = ours.protect_into(&pkt, &mut out).unwrap();
                assert_eq!(
                    &rx.decrypt_rtp(&out[..n]).unwrap()[..],
                    &pkt[..],
                    "{profile}"
                );
                seq = seq.wrapping_add(97);
            }
        }
    }

    #[test]
    fn errors_leave_state_alone_and_never_panic() {
        let keys = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
        let mut p = RtpProtector::new(&keys).unwrap();
        let mut reference = webrtc(&keys);
        let mut r = Rng(99);
        let pkt = random_packet(&mut r, 10, 5);
        let mut small = vec![0u8; pkt.len() + 9];
        assert_eq!(
            p.protect_into(&pkt, &mut small),
            Err(SrtpError::BufferTooSmall {
                needed: pkt.len() + 10
            })
        );
        let mut b = pkt.clone();
        assert!(
            p.protect_in_place(&mut b, pkt.len()).is_err(),
            "no room for the tag"
        );
        assert!(
            p.protect_in_place(&mut b, pkt.len() + 1).is_err(),
            "len past the end"
        );
        for n in 0..12 {
            let mut b = vec![0x80u8; 64];
            assert!(p.protect_in_place(&mut b, n).is_err());
        }
        // X bit with an extension length past the end.
        let mut bad = vec![
            0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0xbe, 0xde, 0, 9, 1, 2, 3,
        ];
        bad.resize(40, 0);
        assert!(p.protect_in_place(&mut bad, 19).is_err());
        // Nothing above advanced the ROC state: the next packet matches the library.
        let mut out = vec![0u8; pkt.len() + 10];
        let n = p.protect_into(&pkt, &mut out).unwrap();
        assert_eq!(&out[..n], &reference.encrypt_rtp(&pkt).unwrap()[..]);
        // SSRC bound.
        for s in 0..MAX_SSRCS as u32 {
            let q = random_packet(&mut r, 1, 1000 + s);
            let mut o = vec![0u8; q.len() + 10];
            if s < MAX_SSRCS as u32 - 1 {
                p.protect_into(&q, &mut o).unwrap();
            }
        }
        let q = random_packet(&mut r, 1, 99_999);
        let mut o = vec![0u8; q.len() + 10];
        assert_eq!(p.protect_into(&q, &mut o), Err(SrtpError::TooManySsrcs));
    }
}
