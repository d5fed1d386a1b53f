#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mymcp_fuzzing::targets::json_limits(data));
