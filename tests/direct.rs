//! Direct I/O on every engine: a direct file knows the alignment the kernel demands (on Linux
//! from `statx(STATX_DIOALIGN)`), and an operation that breaks it is refused with
//! `Error::DirectUnaligned` before anything is submitted, alike on every engine and for every
//! operation, with no byte moved; the same operation aligned goes through.

mod common;

use ferrite_io::{
    Batch, Buf, EngineChoice, Error, File, IoEngine, IoEngineConfig, Misaligned, OpenOptions, Registered,
    SharedIoEngine,
};

/// Buffers large enough for an aligned length plus a misaligned one at any common alignment.
fn config() -> IoEngineConfig {
    IoEngineConfig { buffer_size: 16384, ..common::config(EngineChoice::Auto) }
}

async fn open_direct(engine: &SharedIoEngine, dir: &tempfile::TempDir, name: &str) -> File {
    let options = OpenOptions::new().create(true).direct(true);
    engine.open(dir.path().join(name), &options).await.expect("open direct (the test dir is not tmpfs)")
}

async fn buffer(engine: &SharedIoEngine, len: usize, seed: u8) -> Buf<Registered> {
    let mut buf = engine.acquire().await;
    buf.set_len(len).unwrap();
    buf.fill(seed);
    buf
}

/// Asserts the refusal a misaligned operation must get: which rule, the value, the multiple.
fn refused<T: std::fmt::Debug>(
    name: &str,
    result: &ferrite_io::Result<T>,
    what: Misaligned,
    value: u64,
    required: u32,
) {
    match result {
        Err(e @ Error::DirectUnaligned { what: w, value: v, required: r, .. }) => {
            assert_eq!((*w, *v, *r), (what, value, required), "{name}: {e}");
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{name}: reported as the kernel's EINVAL");
        }
        other => panic!("{name}: expected DirectUnaligned {what} {value} (multiple of {required}), got {other:?}"),
    }
}

/// Linux: the alignment comes from `statx`, and it is the kernel's own rule: the raw syscall on
/// the same descriptor refuses the misaligned length with EINVAL and takes the aligned one.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_files_take_their_alignment_from_statx() {
    use ferrite_io::{AlignmentSource, PositionalIo};
    let dir = common::tempdir();
    let engine = ferrite_io::create_engine(config()).unwrap();
    let file = open_direct(&engine, &dir, "statx").await;
    let alignment = file.alignment().expect("a direct file has an alignment");
    println!("statx(STATX_DIOALIGN) on the test disk: {alignment}");
    assert_eq!(alignment.source, AlignmentSource::Statx, "kernel 6.1+ on ext4 reports STATX_DIOALIGN");
    assert!(alignment.memory.is_power_of_two() && alignment.offset.is_power_of_two(), "{alignment}");
    assert!((512..=4096).contains(&alignment.offset), "{alignment}");
    let unit = alignment.offset as usize;
    let buf = engine.acquire().await; // 4096-aligned memory
    let error = file.std().write_at(&buf[..unit + unit / 2], 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL), "the kernel refuses what the engines refuse");
    assert_eq!(file.std().write_at(&buf[..unit], 0).unwrap(), unit, "and takes the aligned length");
}

/// Windows: on every engine a direct file's handle has no system cache (the kernel reports
/// `FILE_NO_INTERMEDIATE_BUFFERING` in its mode, the mark `FILE_FLAG_NO_BUFFERING` leaves) and a
/// buffered file's has it, and the alignment is the volume's sector size as the system reports
/// it, not the 4096 assumed when it does not.
#[cfg(windows)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_files_bypass_the_system_cache_with_the_volume_sector_size() {
    use ferrite_io::AlignmentSource;
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config()) {
        let file = open_direct(&engine, &dir, name).await;
        let buffered = OpenOptions::new().create(true).direct(false);
        let buffered = engine.open(dir.path().join(format!("{name}-buffered")), &buffered).await.unwrap();
        assert!(no_intermediate_buffering(file.std()), "{name}: the direct file's handle bypasses the cache");
        assert!(!no_intermediate_buffering(buffered.std()), "{name}: the buffered file's handle does not");
        let alignment = file.alignment().expect("a direct file has an alignment");
        println!("{name}: FILE_FLAG_NO_BUFFERING, {alignment}");
        assert!(
            matches!(alignment.source, AlignmentSource::StorageInfo | AlignmentSource::VolumeSector),
            "{name}: the system's sector size, not the assumed one: {alignment}"
        );
        assert!(alignment.offset >= 512 && alignment.offset.is_power_of_two(), "{name}: {alignment}");
        assert!(alignment.memory >= alignment.offset && alignment.memory.is_power_of_two(), "{name}: {alignment}");
    }
}

/// Whether the handle's mode has `FILE_NO_INTERMEDIATE_BUFFERING` (`NtQueryInformationFile`).
#[cfg(windows)]
fn no_intermediate_buffering(file: &std::fs::File) -> bool {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Wdk::Storage::FileSystem::{
        FILE_MODE_INFORMATION, FILE_NO_INTERMEDIATE_BUFFERING, FileModeInformation, NtQueryInformationFile,
    };
    use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
    let mut mode = FILE_MODE_INFORMATION::default();
    // SAFETY: IO_STATUS_BLOCK is a status word (or pointer) and a count; all zeros is valid.
    let mut status: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<FILE_MODE_INFORMATION>() as u32;
    // SAFETY: the handle is open for the borrow of `file`; `status` and `mode` are live and
    // writable, `mode` of `size` bytes, the class asked for.
    let rc = unsafe {
        NtQueryInformationFile(file.as_raw_handle(), &mut status, (&raw mut mode).cast(), size, FileModeInformation)
    };
    assert_eq!(rc, 0, "NtQueryInformationFile(FileModeInformation)");
    mode.Mode & FILE_NO_INTERMEDIATE_BUFFERING != 0
}

/// A direct file whose size is not a multiple of its alignment (written buffered, or cut short
/// by a crash): a read across its end returns the bytes up to it, and `read_exact_at` ends there
/// with `UnexpectedEof` and those bytes, on every engine, instead of continuing at the
/// misaligned end (which the kernel, and the engines' check, refuse). Recovery of a HybridLog
/// on such a file relies on it (a torn last page is read zero-extended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_end_at_the_misaligned_end_of_a_direct_file() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config()) {
        let name_end = format!("{name}-end");
        let unit = open_direct(&engine, &dir, &name_end).await.alignment().expect("direct").offset as usize;
        if unit == 1 {
            continue; // macOS: no alignment, so no misaligned end
        }
        let size = 2 * unit + 100;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join(&name_end), &data).unwrap();
        let file = open_direct(&engine, &dir, &name_end).await;

        let (read, back) = engine.read_at(&file, buffer(&engine, 4 * unit, 0).await, 0).await.into_parts();
        assert_eq!(read.unwrap(), size, "{name}: read_at returns the bytes up to the end");
        assert_eq!(&back[..], &data[..], "{name}");
        drop(back);

        for offset in [0, unit as u64] {
            let (result, back) =
                engine.read_exact_at(&file, buffer(&engine, 4 * unit, 0).await, offset).await.into_parts();
            let wanted_done = size - offset as usize;
            match result {
                Err(Error::UnexpectedEof { done, wanted, .. }) => {
                    assert_eq!((done, wanted), (wanted_done, 4 * unit), "{name} at {offset}");
                }
                other => panic!("{name} at {offset}: expected UnexpectedEof after {wanted_done} bytes, got {other:?}"),
            }
            assert_eq!(&back[..], &data[offset as usize..], "{name} at {offset}: the bytes read come back");
        }
        common::assert_pool_full(&engine);
    }
}

/// Every operation, misaligned in its length, its offset or its buffer's address (a vectored
/// one in one member), is refused with the same typed error on every engine, and the file stays
/// empty: nothing moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaligned_direct_operations_are_refused_alike() {
    let dir = common::tempdir();
    for (name, engine) in common::engines(&config()) {
        let file = open_direct(&engine, &dir, name).await;
        let alignment = file.alignment().expect("a direct file has an alignment");
        let (unit, required) = (alignment.offset as usize, alignment.offset);
        if unit == 1 {
            continue; // macOS: F_NOCACHE takes any alignment, so nothing is misaligned
        }
        assert!(unit <= 4096, "{name}: {alignment}");
        let (odd_len, odd_offset) = (unit + unit / 2, (unit / 2) as u64);

        refused(
            name,
            &engine.write_at(&file, buffer(&engine, odd_len, 1).await, 0).await.0,
            Misaligned::Length,
            odd_len as u64,
            required,
        );
        refused(
            name,
            &engine.write_fixed_at(&file, buffer(&engine, unit, 1).await, odd_offset).await.0,
            Misaligned::Offset,
            odd_offset,
            required,
        );
        refused(
            name,
            &engine.read_at(&file, buffer(&engine, odd_len, 0).await, 0).await.0,
            Misaligned::Length,
            odd_len as u64,
            required,
        );
        refused(
            name,
            &engine.write_all_at(&file, buffer(&engine, unit, 2).await, odd_offset).await.0,
            Misaligned::Offset,
            odd_offset,
            required,
        );
        refused(
            name,
            &engine.read_exact_at(&file, buffer(&engine, odd_len, 0).await, 0).await.0,
            Misaligned::Length,
            odd_len as u64,
            required,
        );
        refused(
            name,
            &engine.write_durable_at(&file, buffer(&engine, odd_len, 3).await, 0).await.0,
            Misaligned::Length,
            odd_len as u64,
            required,
        );

        // One misaligned member refuses the whole vectored operation, as preadv/pwritev do.
        let bufs = vec![buffer(&engine, unit, 4).await, buffer(&engine, odd_len, 5).await];
        refused(name, &engine.write_vectored_at(&file, bufs, 0).await.0, Misaligned::Length, odd_len as u64, required);
        let bufs = vec![buffer(&engine, unit, 0).await, buffer(&engine, unit / 2, 0).await];
        refused(
            name,
            &engine.read_vectored_at(&file, bufs, 0).await.0,
            Misaligned::Length,
            (unit / 2) as u64,
            required,
        );
        // A view (`slice`) starts where the caller says, so its address can break the memory
        // rule; pool slots are 4096-aligned, so the view's address is off by exactly `shift`.
        let memory = alignment.memory as usize;
        if memory > 1 {
            let shift = memory / 2;
            let view = buffer(&engine, 16384, 6).await.slice(shift..shift + unit);
            refused(name, &engine.write_at(&file, view, 0).await.0, Misaligned::Memory, shift as u64, alignment.memory);
            let view = buffer(&engine, 16384, 0).await.slice(shift..shift + unit);
            let bufs = vec![buffer(&engine, unit, 0).await, view];
            refused(
                name,
                &engine.read_vectored_at(&file, bufs, 0).await.0,
                Misaligned::Memory,
                shift as u64,
                alignment.memory,
            );
        }
        assert_eq!(file.size().unwrap(), 0, "{name}: a refused operation moved bytes");

        // In a batch each operation is judged on its own.
        let mut batch = Batch::new();
        batch.write_at(&file, buffer(&engine, unit, 7).await, 0);
        batch.write_at(&file, buffer(&engine, unit, 8).await, unit as u64 + odd_offset);
        let results: Vec<_> = engine.submit_batch(&mut batch).await.collect();
        assert_eq!(results[0].0.as_ref().ok(), Some(&unit), "{name}: the aligned write goes through");
        refused(name, &results[1].0, Misaligned::Offset, unit as u64 + odd_offset, required);
        drop(results);
        assert_eq!(file.size().unwrap(), unit as u64, "{name}");
        let (read, back) = engine.read_at(&file, buffer(&engine, unit, 0).await, 0).await.into_parts();
        assert_eq!(read.unwrap(), unit, "{name}");
        assert!(back.iter().all(|&b| b == 7), "{name}");
        drop(back);
        common::assert_pool_full(&engine);
    }
}
