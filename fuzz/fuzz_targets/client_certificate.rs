//! DER certificates: `ClientCertificate::from_der` (x509-parser, then our bounds).
//! Properties: fuzz/checks/certificate.rs (replayed by crates/auth/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/certificate.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_client_certificate(data));
