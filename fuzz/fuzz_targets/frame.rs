#![no_main]

libfuzzer_sys::fuzz_target!(|message: &[u8]| tributary_fuzz::frame::check(message));
