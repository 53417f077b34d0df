//! A bulk ingest: many blobs written into a store eight at a time, one durable commit per
//! batch, with the writer's statistics at the end.
//!
//! `cargo run -p bob-batch-io --example bulk_ingest -- /tmp/blobs.bob`

use bob_batch_io::{BatchWriter, BatchWriterOptions};
use bob_store_concurrent::ConcurrentStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "blobs.bob".into());
    let store = ConcurrentStore::open_or_create_base(&path, Default::default(), 0)?;
    let writer = BatchWriter::new(store, BatchWriterOptions { permits: 8 });
    let mut ids = Vec::new();
    for batch in 0..10u32 {
        let blobs: Vec<Vec<u8>> =
            (0..100u32).map(|i| (batch * 100 + i).to_le_bytes().repeat(1024)).collect();
        // `None`: a new object each (its id comes back, in input order).
        let items: Vec<_> = blobs.iter().map(|b| (None, &b[..])).collect();
        for result in writer.write_batch(&items) {
            ids.push(result?);
        }
    }
    let back = writer.sink().read_bytes_from_obj(ids[123])?;
    assert_eq!(back, 123u32.to_le_bytes().repeat(1024));
    println!("{} objects written; {:?}", ids.len(), writer.stats());
    writer.sink().close()?;
    Ok(())
}
