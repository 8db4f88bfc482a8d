//! Link options of the `tracelake` binary.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed as DT_RELR (glibc 2.36+, GNU ld 2.38+; older linkers
        // ignore the option). The binary has some 300,000 of them: as RELA entries they are
        // 7 MB that the loader reads at every start and that stay resident, as RELR a few KB.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
