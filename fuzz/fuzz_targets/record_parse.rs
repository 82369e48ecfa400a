//! `record_parse`: see `chronicle-core/tests/fuzz_checks/mod.rs` (shared with the CI property tests).
#![no_main]

#[path = "../../chronicle-core/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::record_parse(data, false);
});
