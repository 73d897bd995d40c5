//! The picture size an H264 sequence parameter set declares, for the stream object's
//! `width`/`height` (parsing by the `h264-reader` crate; the engine only caches SPS/PPS).

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{decode_nal, BitReader};

/// `(width, height)` in pixels after cropping, from an SPS NAL unit (with its header byte).
/// `None` when it does not parse.
pub fn picture_size(sps_nal: &[u8]) -> Option<(u32, u32)> {
    if sps_nal.len() < 2 {
        return None;
    }
    let rbsp = decode_nal(sps_nal).ok()?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&*rbsp)).ok()?;
    sps.pixel_dimensions().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn size_of_ffmpeg_sps_and_garbage() {
        // From ffmpeg 5.1's SDP for a 320x240 libx264 stream (testdata/ffmpeg_h264_opus.sdp).
        let sps = base64::engine::general_purpose::STANDARD
            .decode("Z0LADdoFB+wEQAAAAwBAAAAMg8UKqA==")
            .unwrap();
        assert_eq!(picture_size(&sps), Some((320, 240)));
        assert_eq!(picture_size(&[0x67]), None);
        assert_eq!(picture_size(&[0x67, 0xff, 0xff, 0xff]), None);
        assert_eq!(picture_size(&[]), None);
    }
}
