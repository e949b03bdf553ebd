//! Cache benchmark, against the local Redis (`TENANCY_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Run with `cargo bench -p tenancy-tests --bench cache`.
//!
//! 1. Raw `redis` GET/SET of a serialized value against the tenant cache's GET/SET of
//!    the same value (key encoding, serde, the store trait). Both sides use their own
//!    `ConnectionManager` to the same server and alternate operation by operation, so
//!    drift hits both alike; medians are compared. Target: ratio <= 1.10.
//! 2. Ten tenants hold 100,000 keys each; one is cleared (SCAN MATCH + UNLINK) while
//!    another keeps writing. Reports the time, the other tenant's write latency meanwhile,
//!    and verifies by counting every namespace that only the cleared tenant's keys went.
//!
//! Every key lives under a unique prefix and is removed at the end.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tenancy::cache::{CacheConfig, TenantCache, TenantKey};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_test_support::{RedisPrefix, TempDir, unique_name};

const ROUNDS: usize = 20_000;
const TENANTS: usize = 10;
const KEYS_PER_TENANT: usize = 100_000;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Session {
    token: String,
    user_id: i64,
    roles: Vec<String>,
    expires_at: i64,
}

fn session(i: usize) -> Session {
    Session {
        token: format!("tok-{i:08}-4f1c9a7e2b"),
        user_id: i as i64,
        roles: vec!["member".into(), "billing".into()],
        expires_at: 1_800_000_000 + i as i64,
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn count(conn: &ConnectionManager, pattern: &str) -> usize {
    let mut conn = conn.clone();
    let (mut cursor, mut total) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        total += keys.len();
        if next == 0 {
            return total;
        }
        cursor = next;
    }
}

async fn tenant_caches(tenancy: &Tenancy, n: usize) -> Vec<TenantCache> {
    let mut caches = Vec::new();
    for i in 0..n {
        let id: tenancy::TenantId = unique_name(&format!("bench{i}")).parse().expect("id");
        let new = NewTenant::new(id.clone(), id.to_string(), Isolation::Cache).expect("a valid new tenant");
        tenancy.create_tenant(new, &()).await.expect("create tenant");
        caches.push(tenancy.tenant(&id).await.expect("handle").cache());
    }
    caches
}

async fn get_set(redis: &RedisPrefix, cache: &TenantCache) {
    let client = redis::Client::open(tenancy_test_support::redis_url()).expect("client");
    let mut raw = ConnectionManager::new(client).await.expect("raw connection");
    let value = session(1);
    let bytes = serde_json::to_vec(&value).expect("serialize");
    let key = TenantKey::new("sessions", "tok-00000001");
    let raw_key = format!("{}raw:sessions:tok-00000001", redis.prefix);

    // Warm-up: connections open, allocator and branch predictors settled.
    for _ in 0..2_000 {
        cache.set(&key, &value, None).await.expect("set");
        let _: Option<Session> = cache.get(&key).await.expect("get");
        let _: () = redis::cmd("SET").arg(&raw_key).arg(&bytes).query_async(&mut raw).await.expect("raw set");
        let _: Option<Vec<u8>> = redis::cmd("GET").arg(&raw_key).query_async(&mut raw).await.expect("raw get");
    }
    let (mut raw_set, mut raw_get, mut cache_set, mut cache_get) = (
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
    );
    for round in 0..ROUNDS {
        // Alternate which side goes first, so neither always follows the other.
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let started = Instant::now();
                let _: () = redis::cmd("SET").arg(&raw_key).arg(&bytes).query_async(&mut raw).await.expect("raw set");
                raw_set.push(started.elapsed());
                let started = Instant::now();
                let got: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&raw_key).query_async(&mut raw).await.expect("raw get");
                raw_get.push(started.elapsed());
                assert_eq!(got.as_deref(), Some(bytes.as_slice()));
            } else {
                let started = Instant::now();
                cache.set(&key, &value, None).await.expect("set");
                cache_set.push(started.elapsed());
                let started = Instant::now();
                let got: Option<Session> = cache.get(&key).await.expect("get");
                cache_get.push(started.elapsed());
                assert_eq!(got.as_ref(), Some(&value));
            }
        }
    }
    let (rs, rg, cs, cg) = (median(&mut raw_set), median(&mut raw_get), median(&mut cache_set), median(&mut cache_get));
    println!("GET/SET of a {}-byte value, {ROUNDS} rounds each, medians:", bytes.len());
    println!("  raw redis    SET {:7.1} µs   GET {:7.1} µs", micros(rs), micros(rg));
    println!("  tenant cache SET {:7.1} µs   GET {:7.1} µs", micros(cs), micros(cg));
    let (set_ratio, get_ratio) = (cs.as_secs_f64() / rs.as_secs_f64(), cg.as_secs_f64() / rg.as_secs_f64());
    let both = (cs + cg).as_secs_f64() / (rs + rg).as_secs_f64();
    println!("  ratio        SET {set_ratio:.3}        GET {get_ratio:.3}        SET+GET {both:.3}  (target <= 1.10)");
    let _: () = redis::cmd("UNLINK").arg(&raw_key).query_async(&mut raw).await.expect("unlink");
}

async fn clear_one_of_ten(redis: &RedisPrefix, caches: &[TenantCache]) {
    // Fill through pipelines of the very bytes and keys the tenant cache writes: a
    // million single SETs would only measure the fill.
    let mut conn = redis.conn.clone();
    let fill_started = Instant::now();
    for cache in caches {
        for chunk in (0..KEYS_PER_TENANT).collect::<Vec<_>>().chunks(1_000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                let key = cache.store_key(&TenantKey::new("sessions", format!("tok-{i:08}")));
                pipe.cmd("SET").arg(key).arg(serde_json::to_vec(&session(i)).expect("json")).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.expect("fill");
        }
    }
    println!("\nFilled {TENANTS} tenants x {KEYS_PER_TENANT} keys in {:.1} s", fill_started.elapsed().as_secs_f64());
    let patterns: Vec<String> = caches.iter().map(|cache| format!("{}*", cache.namespace())).collect();
    for pattern in &patterns {
        assert_eq!(count(&conn, pattern).await, KEYS_PER_TENANT);
    }
    // Sample bytes of the others, to compare after the clear.
    let mut samples = Vec::new();
    for cache in &caches[1..] {
        for i in (0..KEYS_PER_TENANT).step_by(997) {
            let key = cache.store_key(&TenantKey::new("sessions", format!("tok-{i:08}")));
            samples.push((key.clone(), redis.raw(&key).await.expect("sample")));
        }
    }

    // Another tenant keeps writing while tenant 0 is cleared.
    let busy = caches[1].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                busy.set(&TenantKey::new("live", (i % 1000).to_string()), &i, None).await.expect("busy set");
                latencies.push(started.elapsed());
                i += 1;
            }
            latencies
        })
    };
    let started = Instant::now();
    let removed = caches[0].clear().await.expect("clear");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = writer.await.expect("writer");

    println!("Cleared 1 of {TENANTS} tenants: removed {removed} keys in {:.3} s", took.as_secs_f64());
    println!(
        "  another tenant's {} SETs meanwhile: median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        latencies.len(),
        micros(median(&mut latencies)),
        micros(percentile(&mut latencies, 0.99)),
        micros(percentile(&mut latencies, 1.0)),
    );
    let remaining: Vec<usize> = {
        let mut counts = Vec::new();
        for pattern in &patterns {
            counts.push(count(&conn, pattern).await);
        }
        counts
    };
    println!("  keys per tenant after: {remaining:?} (tenant 1 also holds up to 1000 'live' keys)");
    assert_eq!(removed as usize, KEYS_PER_TENANT);
    assert_eq!(remaining[0], 0);
    assert!(remaining[2..].iter().all(|&n| n == KEYS_PER_TENANT));
    assert!((KEYS_PER_TENANT..=KEYS_PER_TENANT + 1000).contains(&remaining[1]));
    for (key, bytes) in &samples {
        assert_eq!(redis.raw(key).await.as_ref(), Some(bytes), "{key} changed");
    }
    println!("  verified: only tenant 0's keys are gone; {} sampled keys of the others byte-identical", samples.len());
}

#[tokio::main]
async fn main() {
    let Some(redis) = RedisPrefix::create(":bench").await else { return };
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .cache(CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone()))
        .connect()
        .await
        .expect("connect");
    let caches = tenant_caches(&tenancy, TENANTS).await;
    get_set(&redis, &caches[0]).await;
    clear_one_of_ten(&redis, &caches).await;
    let cleanup = Instant::now();
    drop(redis);
    println!("Removed the benchmark's keys in {:.1} s", cleanup.elapsed().as_secs_f64());
}
