mod common;
use ferrite_io::{EngineChoice, IoEngine, OpenOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let path = dir.path().join(name);
        let file = engine.open(&path, &OpenOptions::new().create(true)).await.unwrap();
        let mut buf = engine.acquire().await;
        buf.fill(7);
        let r = engine.write_fixed_at(&file, buf, 0).await;
        assert_eq!(r.0.unwrap(), 8192);
        engine.sync_data(&file).await.unwrap();
        let buf = r.1.into_free();
        let r = engine.read_at(&file, buf, 4096).await;
        assert_eq!(r.0.unwrap(), 4096, "{name}");
        assert!(r.1.iter().all(|&b| b == 7));
        drop(r.1);
        common::assert_pool_full(&engine);
    }
}
