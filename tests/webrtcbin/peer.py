#!/usr/bin/env python3
"""GStreamer webrtcbin as a WHIP publisher or a WHEP player, the way a new user would drive it.

Debian 12's GStreamer 1.22 has no whipsink/whepsrc, so this script does the WHIP/WHEP exchange
itself (RFC 9725: POST the offer, apply the answer). webrtcbin keeps its defaults: its own RSA
certificate for DTLS and libnice's keepalives (binding indications, no consent checks).

  peer.py publish URL SECONDS   VP8 test video from videotestsrc, 30 fps
  peer.py play URL SECONDS      decodes the VP8 it receives and counts frames

Prints one JSON line at the end: {"frames": N, "per_5s": [...], "ice": ..., "pc": ...}.
For `publish`, frames are the encoded frames handed to webrtcbin.
Exits 1 if the connection failed or the POST was refused.
"""
import json
import sys
import time
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VP8 = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"


def log(*a):
    print(f"[peer.py {time.monotonic() - T0:6.2f}s]", *a, file=sys.stderr, flush=True)


T0 = time.monotonic()


class Peer:
    def __init__(self, mode, url, seconds):
        self.mode, self.url, self.seconds = mode, url, seconds
        self.frames, self.first_frame, self.buckets = 0, None, {}
        self.failed, self.posted = None, False
        self.loop = GLib.MainLoop()
        if mode == "publish":
            self.pipe = Gst.parse_launch(
                "webrtcbin name=w bundle-policy=max-bundle "
                "videotestsrc is-live=true pattern=ball ! "
                "video/x-raw,width=320,height=240,framerate=30/1 ! "
                "vp8enc deadline=1 keyframe-max-dist=60 ! identity name=count ! "
                f"rtpvp8pay pt=96 ! {VP8} ! w."
            )
            self.pipe.get_by_name("count").connect("handoff", self.on_frame)
        else:
            # parse_launch of one element returns the element, not a pipeline.
            self.pipe = Gst.Pipeline.new("player")
            w = Gst.ElementFactory.make("webrtcbin", "w")
            w.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipe.add(w)
        self.w = self.pipe.get_by_name("w")
        if mode == "play":
            self.w.emit(
                "add-transceiver",
                GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                Gst.caps_from_string(VP8),
            )
            self.w.connect("pad-added", self.on_pad)
        else:
            t = self.w.emit("get-transceiver", 0)
            t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.w.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.w.connect("notify::ice-gathering-state", self.on_gathering)
        self.w.connect("notify::ice-connection-state", self.on_state)
        self.w.connect("notify::connection-state", self.on_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def on_frame(self, *_):
        now = time.monotonic()
        if self.first_frame is None:
            self.first_frame = now
            log("first frame")
        self.frames += 1
        k = int((now - self.first_frame) // 5)
        self.buckets[k] = self.buckets.get(k, 0) + 1

    def on_pad(self, _w, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        bin_ = Gst.parse_bin_from_description(
            "rtpvp8depay ! vp8dec ! fakesink name=sink signal-handoffs=true sync=false", True
        )
        self.pipe.add(bin_)
        bin_.sync_state_with_parent()
        bin_.get_by_name("sink").connect("handoff", self.on_frame)
        pad.link(bin_.get_static_pad("sink"))
        log("receiving", pad.get_current_caps().to_string()[:80])

    def on_negotiation_needed(self, w):
        promise = Gst.Promise.new_with_change_func(self.on_offer, w, None)
        w.emit("create-offer", None, promise)

    def on_offer(self, promise, w, _):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            self.fail(f"create-offer: {reply.to_string() if reply is not None else 'no reply'}")
            return
        w.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, w, _):
        # Non-trickle WHIP/WHEP: POST once every candidate is in the offer.
        if w.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        if self.posted:
            return
        self.posted = True
        sdp = w.get_property("local-description").sdp.as_text()
        req = urllib.request.Request(
            self.url, data=sdp.encode(), headers={"Content-Type": "application/sdp"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                answer = r.read().decode()
                log("POST", r.status, r.headers.get("Location"))
        except Exception as e:  # noqa: BLE001 - any refusal ends the run
            self.fail(f"POST {self.url}: {e}")
            return
        ok, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        w.emit("set-remote-description", desc, Gst.Promise.new())

    def on_state(self, w, spec):
        v = w.get_property(spec.name)
        log(spec.name, v.value_nick)
        if v.value_nick == "failed":
            self.fail(f"{spec.name} failed")

    def on_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        self.fail(f"{err.message} ({dbg})")

    def fail(self, why):
        log("FAIL", why)
        if self.failed is None:
            self.failed = why
        self.loop.quit()

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int(self.seconds * 1000), self.loop.quit)
        self.loop.run()
        ice = self.w.get_property("ice-connection-state").value_nick
        pc = self.w.get_property("connection-state").value_nick
        self.pipe.set_state(Gst.State.NULL)
        n = max(self.buckets) + 1 if self.buckets else 0
        out = {
            "frames": self.frames,
            "per_5s": [self.buckets.get(i, 0) for i in range(n)],
            "ice": ice,
            "pc": pc,
            "failed": self.failed,
        }
        print(json.dumps(out), flush=True)
        return 0 if self.failed is None else 1


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("publish", "play"):
        print(__doc__, file=sys.stderr)
        return 2
    Gst.init(None)
    return Peer(sys.argv[1], sys.argv[2], float(sys.argv[3])).run()


if __name__ == "__main__":
    sys.exit(main())
