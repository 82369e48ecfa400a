//! `markers`: see `chronicle-bus/tests/fuzz_checks/mod.rs` (shared with the CI property tests).
#![no_main]

#[path = "../../chronicle-bus/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::markers(data);
});
