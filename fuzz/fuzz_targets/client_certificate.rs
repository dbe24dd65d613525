//! DER certificates: `ClientCertificate::from_der` (webpki for the SANs, our DER walk for the
//! subject CN, then the bounds).
//! Properties: fuzz/checks/certificate.rs (replayed by crates/auth/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/certificate.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_client_certificate(data));
