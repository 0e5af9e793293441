use std::{collections::BTreeMap, path::Path};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    statistics::{StatsLevel, Ticker},
};

use crate::{
    Codec, Error, KeyPrefix, Result, Table, TableDef,
    error::Error::{Decode, UnknownTable},
};

/// A row as stored: key bytes and value bytes.
pub type RawRow = (Box<[u8]>, Box<[u8]>);

/// An open RocksDB database with one column family per registered table.
pub struct Database {
    db: DB,
    tables: BTreeMap<&'static str, TableDef>,
    /// The options it was opened with: they hold its statistics.
    opts: Options,
}

impl Database {
    /// Opens (or creates) the database at `path` with the given tables.
    ///
    /// Column families present on disk but not listed are opened too, so an
    /// older binary can still open a newer database; they are simply unused.
    pub fn open(path: &Path, tables: &[TableDef], cache_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_block_based_table_factory(&block);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // Tickers only (no histograms or timers): the block cache's hit
        // rate for `/metrics`, at the cost of a few atomic increments.
        opts.enable_statistics();
        opts.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);

        let mut names: Vec<String> = tables.iter().map(|t| t.name.to_owned()).collect();
        if let Ok(existing) = DB::list_cf(&opts, path) {
            for name in existing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let descriptors = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, opts.clone()));

        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| {
            // RocksDB reports a held LOCK file as an IO error; say what it means.
            if e.as_ref().contains("LOCK") {
                Error::Locked(path.to_owned())
            } else {
                Error::Rocks(e)
            }
        })?;
        let tables = tables.iter().map(|t| (t.name, *t)).collect();
        Ok(Self { db, tables, opts })
    }

    /// Every table this database was opened with, in name order.
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables.values()
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| UnknownTable(name.to_owned()))
    }

    pub fn get<K: Codec, V: Codec>(
        &self,
        table: &Table<K, V>,
        key: K::In<'_>,
    ) -> Result<Option<V::Out>> {
        let key = Table::<K, V>::encode_key(key);
        let bytes = self.db.get_pinned_cf(self.cf(table.name())?, key)?;
        bytes.map(|b| decode::<V>(table.name(), &b)).transpose()
    }

    pub fn contains<K: Codec, V: Codec>(
        &self,
        table: &Table<K, V>,
        key: K::In<'_>,
    ) -> Result<bool> {
        let key = Table::<K, V>::encode_key(key);
        Ok(self
            .db
            .get_pinned_cf(self.cf(table.name())?, key)?
            .is_some())
    }

    /// Every row whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a, K: Codec, V: Codec>(
        &'a self,
        table: &Table<K, V>,
        prefix: &KeyPrefix,
    ) -> Result<impl Iterator<Item = Result<(K::Out, V::Out)>> + 'a> {
        self.scan_from(table, prefix, prefix.as_bytes(), true)
    }

    /// Rows within `prefix`, starting at `from` (a full key, or any bytes that
    /// sort where the scan should begin) and going forward or backward.
    /// Backward scans start at the last key strictly before `from`.
    pub fn scan_from<'a, K: Codec, V: Codec>(
        &'a self,
        table: &Table<K, V>,
        prefix: &KeyPrefix,
        from: &[u8],
        forward: bool,
    ) -> Result<impl Iterator<Item = Result<(K::Out, V::Out)>> + 'a> {
        let name = table.name();
        let prefix = prefix.as_bytes().to_vec();
        let direction = if forward {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        let mut iter = self
            .db
            .iterator_cf(self.cf(name)?, IteratorMode::From(from, direction))
            .peekable();
        // A reverse iterator starts at `from` itself when it exists: skip it,
        // so both directions treat `from` as a boundary between rows.
        if !forward
            && let Some(Ok((key, _))) = iter.peek()
            && key.as_ref() == from
        {
            iter.next();
        }
        Ok(iter
            .take_while(move |row| match row {
                Ok((key, _)) => key.starts_with(&prefix),
                Err(_) => true,
            })
            .map(move |row| {
                let (key, value) = row?;
                Ok((decode::<K>(name, &key)?, decode::<V>(name, &value)?))
            }))
    }

    /// Every row of a table as raw bytes, for inspection tools.
    pub fn scan_raw<'a>(
        &'a self,
        table: &str,
    ) -> Result<impl Iterator<Item = Result<RawRow>> + 'a> {
        let iter = self.db.iterator_cf(self.cf(table)?, IteratorMode::Start);
        Ok(iter.map(|row| row.map_err(Error::from)))
    }

    /// Writes a batch atomically. The write-ahead log is written before this
    /// returns, so an acknowledged batch survives a crash of the process.
    pub fn write(&self, batch: Batch<'_>) -> Result<()> {
        self.db.write(batch.batch)?;
        Ok(())
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            db: self,
            batch: WriteBatch::default(),
        }
    }

    /// A consistent read-only view as of now.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            db: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// An integer property of one table, e.g. `rocksdb.estimate-num-keys`.
    pub fn property(&self, table: &str, property: &str) -> Result<Option<u64>> {
        Ok(self.db.property_int_value_cf(self.cf(table)?, property)?)
    }

    /// Bytes on disk (SST files) and in memtables, over every table.
    pub fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for name in self.tables.keys() {
            for property in [
                "rocksdb.total-sst-files-size",
                "rocksdb.size-all-mem-tables",
            ] {
                total += self.property(name, property)?.unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Block cache hits and misses since the database was opened.
    pub fn block_cache_hits_misses(&self) -> (u64, u64) {
        (
            self.opts.get_ticker_count(Ticker::BlockCacheHit),
            self.opts.get_ticker_count(Ticker::BlockCacheMiss),
        )
    }

    /// A consistent copy of the whole database in `dir` (which must not
    /// exist), made while it is in use: SST files are hard-linked when
    /// `dir` is on the same file system, the rest copied.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }
}

fn decode<C: Codec>(table: &'static str, bytes: &[u8]) -> Result<C::Out> {
    C::decode(bytes).map_err(|source| Decode { table, source })
}

/// Writes to several tables that land together or not at all.
pub struct Batch<'db> {
    db: &'db Database,
    batch: WriteBatch,
}

impl Batch<'_> {
    pub fn put<K: Codec, V: Codec>(
        &mut self,
        table: &Table<K, V>,
        key: K::In<'_>,
        value: V::In<'_>,
    ) -> Result<()> {
        let key = Table::<K, V>::encode_key(key);
        let mut bytes = Vec::with_capacity(64);
        V::encode(value, &mut bytes);
        self.batch.put_cf(self.db.cf(table.name())?, key, bytes);
        Ok(())
    }

    pub fn delete<K: Codec, V: Codec>(
        &mut self,
        table: &Table<K, V>,
        key: K::In<'_>,
    ) -> Result<()> {
        let key = Table::<K, V>::encode_key(key);
        self.batch.delete_cf(self.db.cf(table.name())?, key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// A point-in-time view: reads see the database as it was when taken.
pub struct Snapshot<'db> {
    db: &'db Database,
    snapshot: rocksdb::Snapshot<'db>,
}

impl Snapshot<'_> {
    pub fn get<K: Codec, V: Codec>(
        &self,
        table: &Table<K, V>,
        key: K::In<'_>,
    ) -> Result<Option<V::Out>> {
        let key = Table::<K, V>::encode_key(key);
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        let bytes = self
            .db
            .db
            .get_pinned_cf_opt(self.db.cf(table.name())?, key, &opts)?;
        bytes.map(|b| decode::<V>(table.name(), &b)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Json, Str, U64};

    const NAMES: Table<Str, Str> = Table::new("names");
    const PAIRS: Table<(Str, Str), Json<u32>> = Table::new("pairs");
    const TABLES: &[TableDef] = &[NAMES.def(), PAIRS.def()];

    fn open(dir: &Path) -> Database {
        Database::open(dir, TABLES, 1 << 20).unwrap()
    }

    #[test]
    fn put_get_delete_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut batch = db.batch();
        batch.put(&NAMES, "a", "alice").unwrap();
        batch.put(&PAIRS, ("a", "x"), &1).unwrap();
        db.write(batch).unwrap();
        assert_eq!(db.get(&NAMES, "a").unwrap().as_deref(), Some("alice"));
        assert_eq!(db.get(&PAIRS, ("a", "x")).unwrap(), Some(1));

        let mut batch = db.batch();
        batch.delete(&NAMES, "a").unwrap();
        db.write(batch).unwrap();
        assert!(!db.contains(&NAMES, "a").unwrap());
    }

    #[test]
    fn prefix_scan_stops_at_prefix_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut batch = db.batch();
        for (user, device, n) in [("a", "1", 1), ("a", "2", 2), ("ab", "1", 3), ("b", "1", 4)] {
            batch.put(&PAIRS, (user, device), &n).unwrap();
        }
        db.write(batch).unwrap();
        let rows: Vec<_> = db
            .scan_prefix(&PAIRS, &KeyPrefix::new().push::<Str>("a"))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        // "ab" must not match the prefix "a": the separator ends the part.
        assert_eq!(
            rows,
            vec![(("a".into(), "1".into()), 1), (("a".into(), "2".into()), 2)]
        );
    }

    #[test]
    fn ranged_scans_in_both_directions() {
        const ROWS: Table<(U64, U64), Str> = Table::new("rows");
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), &[ROWS.def()], 1 << 20).unwrap();
        let mut batch = db.batch();
        for (group, n) in [(1, 1), (1, 5), (1, 9), (2, 3)] {
            batch.put(&ROWS, (group, n), "x").unwrap();
        }
        db.write(batch).unwrap();
        let prefix = KeyPrefix::new().push::<U64>(1);
        let at = |n: u64| [1u64.to_be_bytes(), n.to_be_bytes()].concat();
        let keys = |forward, from: Vec<u8>| -> Vec<u64> {
            db.scan_from(&ROWS, &prefix, &from, forward)
                .unwrap()
                .map(|r| r.unwrap().0.1)
                .collect()
        };
        assert_eq!(keys(true, at(5)), vec![5, 9]);
        assert_eq!(keys(false, at(5)), vec![1], "backward from 5 excludes 5");
        assert_eq!(keys(false, at(7)), vec![5, 1]);
        assert_eq!(
            keys(false, at(u64::MAX)),
            vec![9, 5, 1],
            "stays inside the prefix"
        );
        assert_eq!(keys(true, at(0)), vec![1, 5, 9]);
    }

    #[test]
    fn snapshot_does_not_see_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let snapshot = db.snapshot();
        let mut batch = db.batch();
        batch.put(&NAMES, "a", "alice").unwrap();
        db.write(batch).unwrap();
        assert_eq!(snapshot.get(&NAMES, "a").unwrap(), None);
        assert!(db.get(&NAMES, "a").unwrap().is_some());
    }

    #[test]
    fn data_survives_reopen_and_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path());
            let mut batch = db.batch();
            batch.put(&NAMES, "a", "alice").unwrap();
            db.write(batch).unwrap();
            let second = Database::open(dir.path(), TABLES, 1 << 20);
            assert!(
                matches!(second, Err(Error::Locked(_))),
                "second open must be refused"
            );
        }
        let db = open(dir.path());
        assert_eq!(db.get(&NAMES, "a").unwrap().as_deref(), Some("alice"));
    }

    #[test]
    fn checkpoint_of_an_open_database_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("live"));
        let mut batch = db.batch();
        batch.put(&NAMES, "a", "alice").unwrap();
        db.write(batch).unwrap();
        db.checkpoint(&dir.path().join("copy")).unwrap();
        let mut batch = db.batch();
        batch.put(&NAMES, "b", "bob").unwrap();
        db.write(batch).unwrap();

        let copy = open(&dir.path().join("copy"));
        assert_eq!(copy.get(&NAMES, "a").unwrap().as_deref(), Some("alice"));
        assert_eq!(
            copy.get(&NAMES, "b").unwrap(),
            None,
            "written after the copy"
        );
        assert!(db.size_bytes().unwrap() > 0);
        let (hits, misses) = db.block_cache_hits_misses();
        let _ = db.get(&NAMES, "a").unwrap();
        let (hits_after, misses_after) = db.block_cache_hits_misses();
        assert!(hits_after + misses_after >= hits + misses);
    }

    #[test]
    fn unknown_table_is_an_error() {
        const OTHER: Table<U64, Str> = Table::new("other");
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        assert!(matches!(db.get(&OTHER, 1), Err(Error::UnknownTable(_))));
    }
}
