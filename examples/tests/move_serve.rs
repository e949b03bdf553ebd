//! `serve` under concurrent reads while another process moves one of its tenants (schema
//! → database → table): no answer ever holds another tenant's rows, the moving tenant is
//! answered `503` with `Retry-After` while frozen, and within a second of each switch it
//! is served from the target with the same rows; no session of the old storage remains.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenancy_test_support::unique_name;

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok};
use crate::move_cli::{Rows, movetenant, registry, rows, seed, storage, strings};

/// One `GET` naming `tenant` in `X-Tenant`: status, `Retry-After`, body.
pub(crate) fn get(addr: SocketAddr, path: &str, tenant: &str) -> (u16, Option<String>, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Tenant: {tenant}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).expect("status").parse().expect("numeric status");
    let retry_after = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after").then(|| value.trim().to_owned())
    });
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    (status, retry_after, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// What the workers saw of the moving tenant: `(when, status, isolation)` of each
/// `/tenant` answer.
type Seen = Vec<(Instant, u16, Option<String>)>;

/// Reads `/projects` and `/tenant` of every tenant in turn until told to stop; every
/// answer is the tenant's own, or (the moving one only) `503` with `Retry-After`.
fn reader(addr: SocketAddr, tenants: Vec<String>, moving: String, worker: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Vec::new();
    let mut n = worker;
    while !stop.load(Ordering::Relaxed) {
        let id = &tenants[n % tenants.len()];
        n += 1;
        let (status, retry_after, list) = get(addr, "/projects", id);
        match status {
            200 => {
                let owners: Vec<&str> =
                    list.as_array().expect("a list").iter().map(|p| p["tenant_id"].as_str().expect("owner")).collect();
                let names: Vec<&str> =
                    list.as_array().expect("a list").iter().map(|p| p["name"].as_str().expect("name")).collect();
                assert!(owners.iter().all(|o| o == id), "{id} got another tenant's rows: {list}");
                assert_eq!(names, [format!("{id} project")], "{id}: {list}");
            }
            503 if *id == moving => assert!(retry_after.is_some(), "503 without Retry-After: {list}"),
            // No 500: a freeze lets requests under way finish before it ends the sessions.
            other => panic!("{id}: {other} {list}"),
        }
        if *id == moving {
            let (status, retry_after, body) = get(addr, "/tenant", id);
            assert!(status == 200 || (status == 503 && retry_after.is_some()), "{id}: {status} {body}");
            seen.push((Instant::now(), status, body["isolation"].as_str().map(str::to_owned)));
        }
    }
    seen
}

/// The example app's `serve` on a free loopback port with `extra` flags (its log in
/// `serve.log` of the world's folder), and the address it listens on.
pub(crate) fn spawn_serve(world: &World, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut args = strings(&["--bind", "127.0.0.1:0", "--base-domain", "tenants.test"]);
    args.extend(strings(extra));
    let mut child = world
        .command(env!("CARGO_BIN_EXE_serve"), &args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(world.dir.path().join("serve.log")).expect("log file"))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("serve's first line");
    let addr: SocketAddr =
        line.trim().strip_prefix("listening on http://").expect("serve's address").parse().expect("an address");
    (child, addr)
}

#[tokio::test]
async fn serve_follows_a_move_made_by_another_process() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let (moving, table, database) = (unique_name("s"), unique_name("t"), unique_name("d"));
    for (id, isolation) in [(&moving, "schema"), (&table, "table"), (&database, "database")] {
        crate::move_cli::create_as(&world, id, isolation);
        seed(&world, id).await;
    }
    let before: Rows = rows(&world, &crate::move_cli::Place::Schema, &moving).await;

    let (mut child, addr) = spawn_serve(&world, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let tenants = vec![moving.clone(), table.clone(), database.clone()];
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (tenants, moving, stop) = (tenants.clone(), moving.clone(), stop.clone());
            std::thread::spawn(move || reader(addr, tenants, moving, worker, stop))
        })
        .collect();

    let login = format!("{}{moving}", tenancy::rls::tenant_role_prefix(world.tenancy.master()).await.expect("prefix"));
    let mut switches = Vec::new();
    let moved = std::panic::AssertUnwindSafe(async {
        std::thread::sleep(Duration::from_millis(300));
        for (to, place) in
            [("database", crate::move_cli::target_place_pg(&moving)), ("table", crate::move_cli::Place::Table)]
        {
            let args = crate::move_cli::move_args(&world, &moving, to_of(to), &["--yes"]);
            let started = Instant::now();
            let out = movetenant(&world, &args, None);
            expect_ok(&out, &format!("move to {to}"));
            let ended = Instant::now();
            assert!(text(&out.stdout).contains("moved from"), "{}", text(&out.stdout));
            // serve follows within a second: the tenant in its new mode, its rows.
            loop {
                let (status, _, body) = get(addr, "/tenant", &moving);
                if status == 200 && body["isolation"] == to {
                    break;
                }
                assert!(ended.elapsed() < Duration::from_secs(1), "serve did not follow the move to {to}: {body}");
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("serve followed the move to {to} after {:?}", ended.elapsed());
            switches.push((started, ended, to));
            let (status, _, list) = get(addr, "/projects", &moving);
            assert_eq!(status, 200, "{list}");
            assert_eq!(list[0]["name"], format!("{moving} project"), "{list}");
            assert_eq!(registry(&world, &moving).await, Some((to.to_owned(), "ready".to_owned())));
            assert_eq!(rows(&world, &place, &moving).await, before, "the rows at the {to} target");
            // The old storage has no session left: the schema's login role, then the
            // database.
            let (sql, name) = match to {
                "database" => ("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", login.clone()),
                _ => ("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", format!("{moving}_mv")),
            };
            assert_eq!(
                tenancy_test_support::count(&pg.admin, sql, vec![name.as_str().into()]).await,
                0,
                "{sql} {name}"
            );
            if to == "database" {
                // The sessions the next check expects gone exist now: serve reads there.
                let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1";
                let name = format!("{moving}_mv");
                assert!(tenancy_test_support::count(&pg.admin, sql, vec![name.as_str().into()]).await > 0, "{name}");
            }
            expect_ok(&world.delete(&moving, &["--leftovers"], None), "remove the leftovers");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let result = futures_catch(moved).await;
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = workers
        .into_iter()
        .map(|w| {
            w.join().unwrap_or_else(|_| {
                let log = std::fs::read_to_string(world.dir.path().join("serve.log")).unwrap_or_default();
                panic!("a reader panicked; serve's log:\n{log}")
            })
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }

    let seen: Vec<_> = seen.concat();
    let frozen = seen.iter().filter(|(_, status, _)| *status == 503).count();
    assert!(frozen > 0, "no 503 while the tenant was frozen: {} answers", seen.len());
    // After each switch and its second, never the old mode again.
    for (_, ended, to) in &switches {
        let old = match *to {
            "database" => "schema",
            _ => "database",
        };
        let late = seen.iter().filter(|(at, status, isolation)| {
            *at > *ended + Duration::from_secs(1) && *status == 200 && isolation.as_deref() == Some(old)
        });
        assert_eq!(late.count(), 0, "served from the {old} storage more than a second after the move to {to}");
    }
    eprintln!("{} answers for the moving tenant, {frozen} of them 503", seen.len());

    for id in [&moving, &table, &database] {
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(id, &[], None), "delete");
        assert_eq!(storage(&world, id).await, Default::default(), "{id}");
    }
}

fn to_of(to: &str) -> crate::move_cli::To {
    match to {
        "database" => crate::move_cli::To::Database,
        "schema" => crate::move_cli::To::Schema,
        _ => crate::move_cli::To::Table,
    }
}

/// Awaits `future`, catching a panic (to stop the readers before it unwinds).
async fn futures_catch<F: std::future::Future<Output = ()>>(
    future: std::panic::AssertUnwindSafe<F>,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use std::pin::pin;
    use std::task::Poll;
    let mut future = pin!(future.0);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}
