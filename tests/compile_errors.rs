//! What a new user sees when a function cannot be run or served: errors
//! that say what to pass instead (`tests/compile_errors/*.stderr`).

#[test]
fn misuse_gives_clear_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_errors/*.rs");
}
