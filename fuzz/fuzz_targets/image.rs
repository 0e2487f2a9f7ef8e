//! The image decoder with its size limits, and the truncation check of the pre-training scan.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cvn_models::data::check_image_bytes(data, "fuzz");
    let _ = cvn_models::data::decode_image(data, "fuzz");
});
