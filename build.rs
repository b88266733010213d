//! Sets `cfg(uring)` when the io_uring engine is compiled in: the `io-uring` feature on a Linux target.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(uring)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("CARGO_FEATURE_IO_URING").is_some() {
        println!("cargo::rustc-cfg=uring");
    }
}
