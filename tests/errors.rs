//! Errors a user can act on: the file's path, the operation, the offset or length, and a
//! conversion into `std::io::Error` that keeps the kind and the OS error code, on every engine.

mod common;

use ferrite_io::{Buf, EngineChoice, Error, IoEngine, Op, OpenOptions};

/// The OS error for a write to a read-only handle: `EBADF`, or Windows' `ERROR_ACCESS_DENIED`.
const WRITE_READ_ONLY: i32 = if cfg!(windows) { 5 } else { libc::EBADF };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_name_the_file_the_operation_and_the_offset() {
    let dir = common::tempdir();
    let path = dir.path().join("read-only");
    std::fs::write(&path, b"0123456789").unwrap();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(&path, &OpenOptions::new().write(false)).await.unwrap();
        assert_eq!(file.path(), Some(path.as_path()));
        let (result, _) = engine.write_at(&file, Buf::from(vec![1; 4]), 4096).await.into_parts();
        let error = result.unwrap_err();
        match &error {
            Error::Io { op: Op::Write, path: Some(p), offset: 4096, backend, source } => {
                assert_eq!((p, *backend), (&path, engine.backend()), "{name}");
                assert_eq!(source.raw_os_error(), Some(WRITE_READ_ONLY), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let text = error.to_string();
        let expected = format!("write at offset 4096 of {} on the {} engine failed", path.display(), engine.backend());
        assert!(text.starts_with(&expected), "{name}: {text}");
        // A sync names the file and no offset.
        let synced = engine.sync_data(&file).await;
        if let Err(e) = synced {
            assert!(e.to_string().starts_with(&format!("sync_data (fdatasync) of {}", path.display())), "{name}: {e}");
        }
        // As an io::Error: the same kind and OS error code.
        let io = std::io::Error::from(error);
        assert_eq!(io.raw_os_error(), Some(WRITE_READ_ONLY), "{name}");
    }
}

/// The errors the engines make themselves name the file too: end of file in `read_exact_at`,
/// and a direct-I/O operation refused for its alignment (on a direct file, where the platform
/// has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_made_errors_name_the_file() {
    let dir = common::tempdir();
    let path = dir.path().join("short");
    std::fs::write(&path, [7u8; 4096]).unwrap();
    for (name, engine) in common::engines(&common::config(EngineChoice::Auto)) {
        let file = engine.open(&path, &OpenOptions::new()).await.unwrap();
        let (result, _) = engine.read_exact_at(&file, Buf::from(vec![0; 8192]), 0).await.into_parts();
        let error = result.unwrap_err();
        assert!(
            matches!(&error, Error::UnexpectedEof { path: Some(p), done: 4096, .. } if *p == path),
            "{name}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.starts_with(&format!("read at offset 0 of {}: end of file", path.display())), "{name}: {text}");

        let direct = engine.open(&path, &OpenOptions::new().direct(true)).await.unwrap();
        if direct.alignment().is_some() {
            let (result, _) = engine.read_at(&direct, Buf::from(vec![0; 4096]), 1).await.into_parts();
            let error = result.unwrap_err();
            assert!(matches!(&error, Error::DirectUnaligned { path: Some(p), .. } if *p == path), "{name}: {error:?}");
            assert!(error.to_string().contains(&format!("of {}: direct I/O needs", path.display())), "{name}: {error}");
        }
    }
}

/// Unix: fallocate/F_PREALLOCATE on a read-only descriptor is EBADF. (Windows extends the file
/// instead, and a read-only handle gives ERROR_INVALID_HANDLE.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preallocate_errors_give_the_length_as_a_length() {
    let dir = common::tempdir();
    let path = dir.path().join("read-only");
    std::fs::write(&path, b"x").unwrap();
    let file = ferrite_io::File::open(&path, &OpenOptions::new().write(false)).await.unwrap();
    // fallocate on a descriptor opened read-only fails with EBADF.
    let error = file.preallocate(1 << 20).await.unwrap_err();
    assert!(
        matches!(&error, Error::File { op: Op::Allocate, path: Some(p), len: Some(1048576), .. } if *p == path),
        "{error:?}"
    );
    let text = error.to_string();
    assert_eq!(
        text,
        format!(
            "File::preallocate (fallocate) of {} failed for a length of 1048576 bytes: Bad file descriptor (os error 9)",
            path.display()
        )
    );
    assert!(!text.contains("offset") && !text.contains("engine"), "{text}");
    assert_eq!(error.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn conversion_into_io_error_keeps_the_kind() {
    use std::io::ErrorKind;
    let eof = Error::UnexpectedEof { op: Op::Read, path: None, offset: 0, done: 1, wanted: 2 };
    assert_eq!(std::io::Error::from(eof).kind(), ErrorKind::UnexpectedEof);
    let zero = Error::WriteZero { op: Op::Write, path: None, offset: 0, done: 0, wanted: 2 };
    assert_eq!(std::io::Error::from(zero).kind(), ErrorKind::WriteZero);
    let cancelled = std::io::Error::from(Error::Cancelled { op: Op::Read, path: None, offset: 0 });
    assert_eq!(cancelled.raw_os_error(), Some(libc::ECANCELED));
    let length = std::io::Error::from(Error::Length { len: 2, capacity: 1 });
    assert_eq!(length.kind(), ErrorKind::InvalidInput);
    let inner = length.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Length { len: 2, capacity: 1 })), "the typed error is inside");
    let open = Error::Open { path: "/nope".into(), source: std::io::Error::from_raw_os_error(libc::ENOENT) };
    let open = std::io::Error::from(open);
    assert_eq!((open.kind(), open.raw_os_error()), (ErrorKind::NotFound, Some(libc::ENOENT)));
}
