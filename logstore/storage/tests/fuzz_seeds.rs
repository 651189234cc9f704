//! The fuzz targets' seed corpora (`logstore/fuzz/corpus/<target>/`) hold what today's encoders and writers
//! produce, upstream's golden objects and configs, and (`regression-*`, kept by hand) inputs that once
//! crashed a target. Run with `WOODPECKER_UPDATE_FUZZ_SEEDS=1` to rewrite the generated ones after a format
//! change; otherwise a stale or missing generated seed fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use woodpecker_core::codec::{self, BlockHeaderRecord, FooterRecord, HeaderRecord, IndexRecord};
use woodpecker_core::config::Config;
use woodpecker_core::keys;
use woodpecker_storage::object::{MemoryObjectStorage, ObjectStorage};
use woodpecker_storage::segment::local::LocalSegmentBackend;
use woodpecker_storage::segment::object::{ObjectSegmentBackend, ObjectSegmentOptions};
use woodpecker_storage::segment::{BlockToWrite, SegmentBackend, SegmentRef};

const SEG: SegmentRef = SegmentRef { log_id: 1, segment_id: 0 };

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden(rel: &str) -> Vec<u8> {
    let path = repo().join("e2e/interop/golden").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Blocks with the given entry counts, ids dense from 0, payloads of varied sizes (one empty).
fn blocks(counts: &[usize]) -> Vec<BlockToWrite> {
    let mut first = 0i64;
    let mut out = Vec::new();
    for (b, &n) in counts.iter().enumerate() {
        let entries: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; (i * 7) % 40])).collect();
        out.push(BlockToWrite::new(b as i64, first, entries));
        first += n as i64;
    }
    out
}

fn codec_seeds() -> Vec<(String, Vec<u8>)> {
    let mut block = Vec::new();
    codec::encode_block(&mut block, 0, 0, &[b"a".as_slice(), b"bb".as_slice(), b"".as_slice()]);
    let mut object0 = Vec::new();
    codec::encode_header(&mut object0, &HeaderRecord { version: 6, flags: 0, first_entry_id: 0 });
    codec::encode_block(&mut object0, 0, 0, &[b"first".as_slice(), b"second".as_slice()]);
    let mut records = Vec::new();
    codec::encode_header(&mut records, &HeaderRecord { version: 5, flags: 1, first_entry_id: 0 });
    codec::encode_block_header(
        &mut records,
        &BlockHeaderRecord { block_number: 3, first_entry_id: 10, last_entry_id: 12, block_length: 27, block_crc: 7 },
    );
    codec::encode_index(
        &mut records,
        &IndexRecord { block_number: 0, start_offset: 25, block_size: 60, first_entry_id: 0, last_entry_id: 2 },
    );
    let footer = FooterRecord {
        total_blocks: 1,
        total_records: 1,
        total_size: 100,
        index_offset: 25,
        index_length: 41,
        version: 6,
        flags: 0,
        lac: 2,
    };
    codec::encode_footer(&mut records, &FooterRecord { version: 5, ..footer });
    codec::encode_footer(&mut records, &footer);
    vec![
        ("block".into(), block),
        ("block-object-0".into(), object0),
        ("records".into(), records),
        ("upstream-small-0.blk".into(), golden("small/objects/golden/1/0/0.blk")),
        ("upstream-compacted-m_1.blk".into(), golden("compacted/objects/golden/1/0/m_1.blk")),
    ]
}

async fn object_footer_seeds() -> Vec<(String, Vec<u8>)> {
    let store: Arc<dyn ObjectStorage> = Arc::new(MemoryObjectStorage::new());
    let b = ObjectSegmentBackend::new(store.clone(), "fuzz".into(), ObjectSegmentOptions::default());
    let w = b.create_writer(SEG).await.unwrap();
    for blk in blocks(&[3, 1, 4]) {
        w.write_block(blk).await.unwrap();
    }
    w.finalize(2).await.unwrap();
    let key = keys::footer_key("fuzz", SEG.log_id, SEG.segment_id);
    let finalized = store.get(&key, None).await.unwrap().to_vec();
    b.compact(SEG).await.unwrap();
    let compacted = store.get(&key, None).await.unwrap().to_vec();
    let empty = SegmentRef { log_id: 1, segment_id: 1 };
    b.finalize(empty).await.unwrap();
    let empty_footer =
        store.get(&keys::footer_key("fuzz", empty.log_id, empty.segment_id), None).await.unwrap().to_vec();
    vec![
        ("finalized".into(), finalized),
        ("compacted".into(), compacted),
        ("empty".into(), empty_footer),
        ("upstream-n1000".into(), golden("n1000/objects/golden/1/0/footer.blk")),
        ("upstream-compacted".into(), golden("compacted/objects/golden/1/0/footer.blk")),
        ("upstream-recovered".into(), golden("recovered/objects/golden/1/0/footer.blk")),
    ]
}

async fn local_scan_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalSegmentBackend::new(dir.path().to_path_buf(), "fuzz".into());
    let data = dir.path().join(keys::local_segment_dir("fuzz", SEG.log_id, SEG.segment_id)).join("data.log");
    let w = b.create_writer(SEG).await.unwrap();
    for blk in blocks(&[2, 3, 1]) {
        w.write_block(blk).await.unwrap();
    }
    let open = std::fs::read(&data).unwrap();
    w.finalize(2).await.unwrap();
    let finalized = std::fs::read(&data).unwrap();
    // The last block cut short, as a crash mid-append leaves it.
    let torn = open[..open.len() - 5].to_vec();
    vec![("open".into(), open), ("finalized".into(), finalized), ("torn-tail".into(), torn)]
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("defaults.yaml".to_owned(), Config::default_yaml().unwrap().into_bytes()),
        ("upstream-small.yaml".to_owned(), golden("small/config.yaml")),
    ];
    for sample in ["upstream-minimal.yaml", "single-zone.yaml"] {
        let path = repo().join("config/samples").join(sample);
        seeds.push((format!("sample-{sample}"), std::fs::read(&path).unwrap()));
    }
    seeds
}

#[tokio::test]
async fn fuzz_seeds_are_what_the_encoders_write() {
    let update = std::env::var_os("WOODPECKER_UPDATE_FUZZ_SEEDS").is_some();
    let targets = [
        ("codec_records", codec_seeds()),
        ("object_footer", object_footer_seeds().await),
        ("local_scan", local_scan_seeds().await),
        ("config_yaml", config_seeds()),
    ];
    let mut stale = Vec::new();
    for (target, seeds) in targets {
        let dir = repo().join("logstore/fuzz/corpus").join(target);
        for (name, bytes) in seeds {
            let path = dir.join(&name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                stale.push(format!("{target}/{name}"));
            }
        }
    }
    assert!(stale.is_empty(), "stale fuzz seeds (rerun with WOODPECKER_UPDATE_FUZZ_SEEDS=1): {stale:?}");
}
