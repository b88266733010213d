//! Fuzzes the buffer lifecycle: pool accounting, typestate transitions, bytes and file contents
//! across plain, fixed, batched and abandoned operations, on the io_uring engine when this
//! machine has io_uring and on the tokio engine. The model and its checks are in `src/model.rs`.
//!
//! `cargo +nightly fuzz run buf_lifecycle -- -max_total_time=180`

#![no_main]

use std::time::Duration;

use ferrite_io::{EngineChoice, TokioEngine};
use ferrite_io_fuzz::{Input, model, runtime, scratch_file};
use libfuzzer_sys::fuzz_target;

/// The model's options.
fn options() -> model::Options {
    model::Options { timeout: Duration::from_secs(5) }
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn uring_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let config = model::Setup::new(1, false, false, false).config(EngineChoice::Uring);
        matches!(ferrite_io::check_uring_support(&config), ferrite_io::UringSupport::Supported(_))
    })
}

fuzz_target!(init: { runtime(); }, |input: Input| {
    let path = scratch_file("");
    runtime().block_on(async {
        let foreign = TokioEngine::new(&model::foreign_config()).expect("foreign engine");
        #[cfg(all(feature = "io-uring", target_os = "linux"))]
        if input.uring && uring_available() {
            let config = input.setup.config(EngineChoice::Uring);
            let engine = ferrite_io::UringEngine::new(&config).expect("io_uring engine");
            let (setup, actions) = (&input.setup, &input.actions);
            model::run(engine, foreign, &path, setup, actions, options()).await;
            return;
        }
        let config = input.setup.config(EngineChoice::Tokio);
        let engine = TokioEngine::new(&config).expect("tokio engine");
        let (setup, actions) = (&input.setup, &input.actions);
        model::run(engine, foreign, &path, setup, actions, options()).await;
    });
    let _ = std::fs::remove_file(&path);
});
