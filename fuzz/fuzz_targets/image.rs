//! The image decoders with their size limits — the data sets' (and the truncation check of the
//! pre-training scan) and CLIP's preprocessing (`clip --image`) — on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cvn_models::data::check_image_bytes(data, "fuzz");
    let _ = cvn_models::data::decode_image(data, "fuzz");
    let _ = clip_encoder::ImageProcessor::clip(224).decode(data, "fuzz");
});
