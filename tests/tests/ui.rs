//! Compile-time behaviour of `#[tenant_scoped]` and `#[tenancy::shared]`: the accepted forms build and run
//! (`ui/pass`), and each mistake fails with its errors at the offending tokens
//! (`ui/fail`, expected output in the `.stderr` files).
//!
//! The expected output is that of the toolchain `rust-toolchain.toml` pins. After a
//! deliberate change to a message, regenerate with `TRYBUILD=overwrite cargo test -p
//! tenancy-tests --test integration ui::` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
