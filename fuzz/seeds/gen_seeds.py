#!/usr/bin/env python3
"""Writes the checked-in seed inputs under fuzz/seeds/<target>/ (see fuzz/README.md).

Run from anywhere: `python3 fuzz/seeds/gen_seeds.py`. Deterministic; the SDP seeds are
copies of control/src/testdata/*.sdp plus one RFC 4568-style offer. Crash inputs found by
fuzzing are added by hand as `crash-*` files and are not touched here.
"""
import base64
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rtp(seq, ts, ssrc, pt=96, marker=False, csrcs=(), ext=None, payload=b"payload", pad=0):
    b0 = 0x80 | len(csrcs) | (0x10 if ext is not None else 0) | (0x20 if pad else 0)
    b1 = (0x80 if marker else 0) | pt
    p = struct.pack(">BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    for c in csrcs:
        p += struct.pack(">I", c)
    if ext is not None:
        profile, body = ext
        assert len(body) % 4 == 0
        p += struct.pack(">HH", profile, len(body) // 4) + body
    p += payload
    if pad:
        p += b"\0" * (pad - 1) + bytes([pad])
    return p


def framed(seed, pkts):
    out = struct.pack("<I", seed)
    for p in pkts:
        assert len(p) < 256
        out += bytes([len(p)]) + p
    return out


def pli(media, sender=1):
    return struct.pack(">BBHII", 0x81, 206, 2, sender, media)


def fir(entries, sender=1):
    body = b"".join(struct.pack(">IBxxx", ssrc, n) for ssrc, n in entries)
    return struct.pack(">BBHII", 0x84, 206, 2 + 2 * len(entries), sender, 0) + body


def nack(media, pairs, sender=1):
    body = b"".join(struct.pack(">HH", pid, blp) for pid, blp in pairs)
    return struct.pack(">BBHII", 0x81, 205, 2 + len(pairs), sender, media) + body


def rr(ssrc, src=0x12345678):
    # One report block: source, fraction/cumulative lost, highest seq, jitter, LSR, DLSR.
    return struct.pack(">BBHI", 0x81, 201, 7, ssrc) + struct.pack(">I", src) + bytes(20)


def sr(ssrc):
    return struct.pack(">BBHIIIIII", 0x80, 200, 6, ssrc, 0x83AA7E80, 0, 90000, 10, 1200)


def sdes(ssrc, cname=b"ffmpeg"):
    item = bytes([1, len(cname)]) + cname + b"\0"
    item += b"\0" * (-(4 + len(item)) % 4)
    body = struct.pack(">I", ssrc) + item
    return struct.pack(">BBH", 0x81, 202, len(body) // 4) + body


# RTP packets captured from ffmpeg 5.1 SRTP output (engine/src/srtp.rs tests): real
# headers (PT 97, marker, seq across the 16-bit wrap) with encrypted payloads and tags.
FFMPEG_SRTP = [bytes.fromhex(h) for h in [
    "80e1fffeab9f36a4123456783b7d13f0bbc8485fb636ed042be2fb30a31f98f668810ab5aca02ad9f61f36a2b0cf4b51259209620bb33fe0f67ca7c2ffaf2253ca87f78d1cc28719113b75ada5d9a79afbe349a3ba9bde3779107b",
    "80e1ffffab9f3a6412345678d091fa6cf4506849bf249398823194b0ad029a47a9ae48fe99b835698bded93bdb42eb7e9342d854e0bbae0404b4fe2dffd4bf5d140832602a818be24fcd0ff742",
    "80e10000ab9f3e241234567871314f8551bd3117e001a7ce1bffb73ce4dc859018daca8e247af00a78009ab84dbb7e78b228bea4c5ccc4ba262fdbd2b42d6eb986495197deb1809956d73aa6",
]]
FFMPEG_SRTCP_SR = bytes.fromhex(
    "80c800061234567806824077b779649017bb3374b718c0e58e813f93800000005b1be7a4599f9d78dcc1")
FFMPEG_KEY = base64.b64decode("6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD")

ONE_BYTE_EXT = (0xBEDE, bytes([0x10, 0xAA, 0x21, 0x01, 0x02, 0, 0, 0]))
TWO_BYTE_EXT = (0x1000, bytes([0x01, 0x02, 0xAA, 0xBB]))


def rtp_seeds():
    t = "rtp_parse_rewrite"
    put(t, "ffmpeg_opus_srtp", FFMPEG_SRTP[0])
    put(t, "plain_h264", rtp(1000, 90000, 0x01020304, marker=True, payload=b"\x65" + bytes(40)))
    put(t, "csrc_ext_pad", rtp(7, 1, 2, csrcs=(10, 11), ext=ONE_BYTE_EXT, pad=4))
    put(t, "two_byte_ext", rtp(8, 2, 3, ext=TWO_BYTE_EXT))
    put(t, "rfc3550_ext", rtp(9, 3, 4, ext=(0x1234, bytes(8))))
    # Element 0x1F (id 1, 16 bytes) overruns a one-word block: we accept the packet (the
    # extension block itself fits); the rtp crate would read past it.
    put(t, "ext_element_overrun", rtp(10, 4, 5, ext=(0xBEDE, bytes([0x1F, 1, 2, 3])), payload=bytes(20)))
    put(t, "rtcp_pli", pli(0xCAFE))
    # Streams through the Rewriter: wrap, loss, reordering, a duplicate, a restart with a
    # new SSRC, a second payload type, RTCP in between.
    seq = [65533, 65534, 65535, 0, 2, 1, 5, 5, 6]
    pkts = [rtp(s, 3000 * s + 0xFFFF0000, 0xAAAA) for s in seq]
    pkts.insert(4, pli(0xAAAA))
    pkts += [rtp(s, 900 * s, 0xBBBB) for s in (40000, 40001, 40003)]
    pkts += [rtp(s, 960 * s, 0xCCCC, pt=111, payload=b"opus") for s in (1, 2, 3)]
    pkts += [rtp(7, 0xFFFFFF00, 0xAAAA)]  # straggler from the old source
    put(t, "stream_wrap_restart", framed(0x12345678, pkts))
    put(t, "five_payload_types", framed(1, [rtp(1, 1, 1, pt=p) for p in (96, 97, 98, 99, 100, 96)]))


def rtcp_seeds():
    t = "rtcp_feedback"
    put(t, "pli", pli(10))
    put(t, "nack", nack(12, [(500, 0b101)]))
    put(t, "fir", fir([(11, 3), (12, 4)]))
    put(t, "rr_pli_nack", rr(1) + pli(10) + nack(12, [(500, 5), (65535, 0xFFFF)]))
    put(t, "sr_sdes", sr(0x12345678) + sdes(0x12345678))
    put(t, "rr_fir", rr(2) + fir([(0xDEADBEEF, 1)]))
    put(t, "truncated_nack", nack(12, [(1, 1)])[:14])


def op(code, pkt):
    assert len(pkt) < 256
    return bytes([code, len(pkt)]) + pkt


def srtp_seeds():
    t = "srtp_unprotect"
    # AES_CM_128_HMAC_SHA1_80 with ffmpeg's key: its real SRTP and SRTCP packets decrypt.
    put(t, "ffmpeg_aescm_capture",
        bytes([0]) + FFMPEG_KEY + b"".join(op(0, p) for p in FFMPEG_SRTP) + op(1, FFMPEG_SRTCP_SR))
    plain = [rtp(s, s * 960, 0x55, pt=111, payload=bytes(range(s % 7, 30))) for s in (65534, 65535, 0, 1, 0, 3)]
    key = bytes(range(30))
    put(t, "aescm_round_trip",
        bytes([0]) + key + b"".join(op(2 | (i << 2), p) for i, p in enumerate(plain))
        + op(3, rr(0x55)) + op(3 | (9 << 2), rr(0x55) + pli(0x66)))
    put(t, "gcm_round_trip",
        bytes([1]) + key[:28] + b"".join(op(2 | (i << 3), p) for i, p in enumerate(plain))
        + op(3, sr(0x77) + sdes(0x77)))
    put(t, "ext_round_trip",
        bytes([0]) + key + op(2, rtp(1, 1, 9, ext=ONE_BYTE_EXT)) + op(2, rtp(2, 2, 9, csrcs=(1,), ext=TWO_BYTE_EXT)))
    put(t, "garbage_srtcp_e0", bytes([0]) + key + op(1, rr(3) + b"\0\0\0\5" + bytes(10)))


def sdp_seeds():
    t = "sdp_parse"
    src = os.path.join(ROOT, "control", "src", "testdata")
    os.makedirs(os.path.join(HERE, t), exist_ok=True)
    for f in sorted(os.listdir(src)):
        if f.endswith(".sdp"):
            shutil.copyfile(os.path.join(src, f), os.path.join(HERE, t, f))
    put(t, "sip_sdes_offer.sdp", "\n".join([
        "v=0",
        "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
        "s=SDES offer",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "a=sendonly",
        "m=audio 49170 RTP/SAVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        "a=rtcp:49171",
        "a=mid:a0",
        "a=ssrc:3735928559 cname:x",
        "m=video 51372 RTP/SAVPF 100",
        "c=IN IP4 192.0.2.11/127",
        "a=rtpmap:100 VP8/90000",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=crypto:7 AEAD_AES_128_GCM inline:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXA==",
        "m=video 0 RTP/AVP 120",
        "",
    ]))


def filter_seeds():
    t = "rest_filter"
    for name, body in [
        ("empty", "{}"),
        ("name_published", '{"name":"s1","published":false}'),
        ("status", '{"name":"s1","status":"PUBLISHING"}'),
        ("ids", '{"mediaSessionIds":["m1","m4","zz"]}'),
        ("id_and_ids", '{"mediaSessionIds":["m1","m4"],"mediaSessionId":"m4"}'),
        ("all", '{"all":true}'),
        ("display_appkey", '{"display":["metrics"],"appKey":"defaultApp","mediaSessionId":"m1"}'),
        ("bad_status", '{"status":"DANCING"}'),
        ("unknown_field", '{"nmae":"s1"}'),
    ]:
        put(t, name + ".json", body)


if __name__ == "__main__":
    rtp_seeds()
    rtcp_seeds()
    srtp_seeds()
    sdp_seeds()
    filter_seeds()
