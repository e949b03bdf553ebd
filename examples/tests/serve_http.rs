//! The `serve` binary driven over real HTTP: tenants of every isolation mode served side
//! by side from one process, two per mode, each seeing only its own data (in the responses
//! and in the database), found by `X-Tenant` header or by subdomain; unknown tenants get
//! 404; Ctrl-C stops the server cleanly.
//!
//! The client is a few lines of HTTP/1.1 over `std::net::TcpStream` (one request per
//! connection), to keep an HTTP client crate out of the workspace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir};

/// The base domain the tests serve subdomains under (`serve --base-domain`).
const BASE: &str = "tenants.test";

/// A running `serve` process, killed on drop if [`Server::stop`] was not called.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    /// Starts `serve` on a free port of 127.0.0.1 with `env`, in `dir`, and waits for the
    /// address it prints.
    fn start(dir: &TempDir, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_serve"));
        command
            .current_dir(dir.path())
            .args(["--bind", "127.0.0.1:0", "--base-domain", BASE])
            .env_remove("DATABASE_URL")
            .env_remove("TENANCY_BIND")
            .env_remove("TENANCY_BASE_DOMAIN")
            .env_remove("TENANCY_SECRET_KEY")
            .env("TENANCY_SECRET_KEY_FILE", dir.path().join("secret.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read serve's first line");
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            panic!("serve did not start: {line:?}, {:?}", child.wait());
        };
        let addr = addr.parse().expect("bound address");
        Server { child, stdout, addr }
    }

    /// Sends SIGINT (Ctrl-C) and checks that the server shuts down cleanly.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read serve's output");
        let status = self.child.wait().expect("wait for serve");
        assert!(status.success(), "serve exited with {status}");
        assert_eq!(rest, "shut down\n");
    }

    /// One HTTP/1.1 request; returns the status and the body, parsed as JSON when it is.
    fn request(&self, method: &str, path: &str, tenant: Via<'_>, body: Option<Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let host = match tenant {
            Via::Host(id) | Via::Both { host: id, .. } => format!("{id}.{BASE}:{}", self.addr.port()),
            Via::Domain(domain) => format!("{domain}:{}", self.addr.port()),
            _ => format!("127.0.0.1:{}", self.addr.port()),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Via::Header(id) | Via::Both { header: id, .. } = tenant {
            head.push_str(&format!("X-Tenant: {id}\r\n"));
        }
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(head.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("receive");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        let status = head.split(' ').nth(1).expect("status").parse().expect("numeric status");
        let body = if head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked")) {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    fn get(&self, path: &str, tenant: Via<'_>) -> (u16, Value) {
        self.request("GET", path, tenant, None)
    }

    fn post(&self, path: &str, tenant: Via<'_>, body: Value) -> (u16, Value) {
        self.request("POST", path, tenant, Some(body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After `stop` the process is gone and this fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// How a request names its tenant.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    /// Not at all.
    Nobody,
    /// `X-Tenant: <id>`.
    Header(&'a str),
    /// `Host: <id>.tenants.test:<port>`.
    Host(&'a str),
    /// Both, naming different tenants: the header wins.
    Both { header: &'a str, host: &'a str },
    /// `Host: <domain>:<port>`: a custom domain.
    Domain(&'a str),
}

/// The `key` field of each object of a JSON array.
fn field(list: &Value, key: &str) -> Vec<String> {
    list.as_array().expect("a JSON array").iter().map(|p| p[key].as_str().expect(key).to_owned()).collect()
}

fn names(list: &Value) -> Vec<String> {
    field(list, "name")
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array().expect("a JSON array").iter().map(|p| p["id"].as_i64().expect("id")).collect()
}

/// What one tenant created over HTTP, to be found in its storage afterwards.
#[derive(Debug, Default)]
struct Created {
    projects: Vec<String>,
    tasks: Vec<String>,
    comments: Vec<String>,
}

/// Drives a pair of tenants of one relational mode: `a` through the header, `b` through
/// its subdomain. Returns what each created.
fn relational_pair(server: &Server, a: &str, b: &str, isolation: &str) -> (Created, Created) {
    let (va, vb) = (Via::Header(a), Via::Host(b));
    let mut created = (Created::default(), Created::default());

    // Each tenant is itself, in its mode.
    for (id, via) in [(a, va), (b, vb)] {
        let (status, body) = server.get("/tenant", via);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], id);
        assert_eq!(body["isolation"], isolation);
    }

    // a creates two projects, b one; ids may coincide across tenants that do not share
    // tables, which is why a has more than b.
    let mut project_ids: (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for (first, name) in [(true, format!("{a} alpha")), (true, format!("{a} beta")), (false, format!("{b} gamma"))] {
        let via = if first { va } else { vb };
        let (status, body) = server.post("/projects", via, json!({ "name": format!("  {name} ") }));
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["name"], name.as_str(), "trimmed");
        assert_eq!(body["tenant_id"], if first { a } else { b });
        let id = body["id"].as_i64().expect("id");
        if first {
            project_ids.0.push(id);
            created.0.projects.push(name);
        } else {
            project_ids.1.push(id);
            created.1.projects.push(name);
        }
    }
    let (a_projects, b_projects) = project_ids;

    // Tasks and a comment, on the tenant's own projects.
    let (status, a_task) = server.post(&format!("/projects/{}/tasks", a_projects[0]), va, json!({ "title": "plan" }));
    assert_eq!(status, 201, "{a_task}");
    assert_eq!(a_task["tenant_id"], a);
    assert_eq!(a_task["done"], false);
    created.0.tasks.push("plan".to_owned());
    let (status, b_task) =
        server.post(&format!("/projects/{}/tasks", b_projects[0]), vb, json!({ "title": "ship", "done": true }));
    assert_eq!(status, 201, "{b_task}");
    assert_eq!(b_task["tenant_id"], b);
    created.1.tasks.push("ship".to_owned());
    let b_task = b_task["id"].as_i64().expect("task id");
    let (status, comment) = server.post(&format!("/tasks/{b_task}/comments"), vb, json!({ "body": "done!" }));
    assert_eq!(status, 201, "{comment}");
    assert_eq!(comment["tenant_id"], b);
    created.1.comments.push("done!".to_owned());

    // Lists: each sees only its own.
    let (status, list) = server.get("/projects", va);
    assert_eq!(status, 200);
    assert_eq!(names(&list), created.0.projects);
    assert_eq!(ids(&list), a_projects);
    assert!(list.as_array().unwrap().iter().all(|p| p["tenant_id"] == a), "{list}");
    let (status, list) = server.get("/projects", vb);
    assert_eq!(status, 200);
    assert_eq!(names(&list), created.1.projects);

    // One project with its tasks.
    let (status, project) = server.get(&format!("/projects/{}", a_projects[0]), va);
    assert_eq!(status, 200, "{project}");
    assert_eq!(project["name"], created.0.projects[0].as_str());
    assert_eq!(field(&project["tasks"], "title"), ["plan"]);
    let (status, task) = server.get(&format!("/tasks/{b_task}"), vb);
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["comments"][0]["body"], "done!");
    assert_eq!(task["comments"].as_array().unwrap().len(), 1);

    // Another tenant's ids: a project id b does not have is 404, for reading and for
    // adding a task to it; an id b has is b's own project, never a's.
    let mut refused = 0;
    for id in &a_projects {
        let (status, body) = server.get(&format!("/projects/{id}"), vb);
        if b_projects.contains(id) {
            assert_eq!((status, &body["name"]), (200, &json!(created.1.projects[0])), "{body}");
        } else {
            assert_eq!(status, 404, "{body}");
            assert_eq!(body["error"], format!("project {id} not found"));
            let (status, body) = server.post(&format!("/projects/{id}/tasks"), vb, json!({ "title": "intrude" }));
            assert_eq!(status, 404, "{body}");
            refused += 1;
        }
    }
    assert!(refused >= 1, "a has a project id b does not have");
    for id in &b_projects {
        let (status, body) = server.get(&format!("/projects/{id}"), va);
        if a_projects.contains(id) {
            assert_ne!(body["name"], json!(created.1.projects[0]), "{body}");
        } else {
            assert_eq!(status, 404, "{body}");
        }
    }
    let (status, body) = server.post(&format!("/tasks/{b_task}/comments"), va, json!({ "body": "intrude" }));
    // a's own task may share b's task id (own tables); then the comment is a's.
    if status == 201 {
        assert_eq!(body["tenant_id"], a);
        created.0.comments.push("intrude".to_owned());
    } else {
        assert_eq!(status, 404, "{body}");
    }

    // The header wins over the subdomain.
    let (status, list) = server.get("/projects", Via::Both { header: a, host: b });
    assert_eq!((status, names(&list)), (200, created.0.projects.clone()));

    // The dashboard counts only the tenant's own rows.
    for (via, mine) in [(va, &created.0), (vb, &created.1)] {
        let (status, stats) = server.get("/dashboard", via);
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["projects"], mine.projects.len());
        assert_eq!(stats["tasks"], mine.tasks.len());
        assert_eq!(stats["comments"], mine.comments.len());
    }
    let (_, stats) = server.get("/dashboard", vb);
    assert_eq!(stats["open_tasks"], 0, "b's only task is done");

    // Invalid input: JSON errors with the right status, nothing created.
    let (status, body) = server.post("/projects", va, json!({ "name": "   " }));
    assert_eq!((status, &body["error"]), (422, &json!("invalid name: 1 to 200 characters")));
    let (status, body) = server.post("/projects", va, json!({ "title": "x" }));
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown field `title`"), "{body}");
    let (status, body) = server.get("/projects/abc", va);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    notes(server, a, b);
    created
}

/// Drives a pair of cache-isolated tenants: resolved (not 404), each itself, relational
/// endpoints refused with 409 naming only the tenant itself.
fn cache_pair(server: &Server, a: &str, b: &str) {
    for (me, other, via) in [(a, b, Via::Header(a)), (b, a, Via::Host(b)), (a, b, Via::Host(a))] {
        let (status, body) = server.get("/tenant", via);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], me);
        assert_eq!(body["isolation"], "cache");
        for (method, path) in
            [("GET", "/projects"), ("POST", "/projects"), ("GET", "/projects/1"), ("GET", "/dashboard")]
        {
            let body = (method == "POST").then(|| json!({ "name": "nope" }));
            let (status, body) = server.request(method, path, via, body);
            assert_eq!(status, 409, "{method} {path}: {body}");
            let error = body["error"].as_str().expect("JSON error");
            assert!(error.contains(&format!("'{me}' uses cache isolation")), "{error}");
            assert!(!error.contains(other), "{error}");
        }
    }
    notes(server, a, b);
}

/// Notes live in each tenant's cache namespace: the same key holds each tenant's own note.
fn notes(server: &Server, a: &str, b: &str) {
    let key = "key:with*glob?[chars]";
    let path = format!(
        "/notes/{}",
        key.replace(':', "%3A").replace('*', "%2A").replace('?', "%3F").replace('[', "%5B").replace(']', "%5D")
    );
    assert_eq!(server.get(&path, Via::Header(b)).0, 404, "no note yet");
    let (status, body) = server.request("PUT", &path, Via::Header(a), Some(json!({ "text": format!("{a}'s note") })));
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.get(&path, Via::Header(b)).0, 404, "a's note is not b's");
    let (status, body) = server.request("PUT", &path, Via::Host(b), Some(json!({ "text": format!("{b}'s note") })));
    assert_eq!(status, 204, "{body}");
    assert_eq!(server.get(&path, Via::Header(a)), (200, json!({ "text": format!("{a}'s note") })));
    assert_eq!(server.get(&path, Via::Host(b)), (200, json!({ "text": format!("{b}'s note") })));
}

/// The requests that name no tenant, or one that does not exist.
fn untenanted(server: &Server) {
    assert_eq!(server.get("/health", Via::Nobody), (200, json!({ "status": "ok" })));
    let (status, plans) = server.get("/plans", Via::Nobody);
    assert_eq!(status, 200, "{plans}");
    let codes: Vec<_> = plans.as_array().unwrap().iter().map(|p| p["code"].clone()).collect();
    assert_eq!(codes, ["free", "pro", "enterprise"]);
    for via in [Via::Nobody, Via::Header("nobody"), Via::Host("nobody"), Via::Header("Not An Id!")] {
        for path in ["/projects", "/tenant", "/dashboard"] {
            let (status, body) = server.get(path, via);
            assert_eq!(status, 404, "{via:?} {path}: {body}");
        }
    }
    let (status, _) = server.post("/projects", Via::Header("nobody"), json!({ "name": "x" }));
    assert_eq!(status, 404);
}

/// `(tenant_id, value)` rows of `sql` on a tenant's storage.
async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<(String, String)> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect(sql)
        .iter()
        .map(|row| (row.try_get_by_index(0).expect("tenant_id"), row.try_get_by_index(1).expect("value")))
        .collect()
}

/// Checks the tenants' storage itself: every row the HTTP calls created is in its tenant's
/// storage with its tenant's id, and a storage holds rows of no tenant that does not share it.
async fn assert_storage(tenancy: &Tenancy, tenants: &[(&str, &Created)], sharing: &[&str]) {
    for (id, created) in tenants {
        let tenant = tenancy.get_tenant(*id).await.unwrap();
        let db = tenancy.connect_storage(&tenant).await.unwrap().expect("relational storage");
        for (sql, expected) in [
            ("SELECT tenant_id, name FROM projects ORDER BY id", &created.projects),
            ("SELECT tenant_id, title FROM tasks ORDER BY id", &created.tasks),
            ("SELECT tenant_id, body FROM comments ORDER BY id", &created.comments),
        ] {
            let found = rows(&db, sql).await;
            assert!(found.iter().all(|(owner, _)| sharing.contains(&owner.as_str())), "{id}: {sql}: {found:?}");
            let own: Vec<_> = found.into_iter().filter(|(owner, _)| owner == id).map(|(_, value)| value).collect();
            assert_eq!(&own, expected, "{id}: {sql}");
        }
        if tenant.isolation() != Isolation::Table {
            // Table tenants get the shared master pool, which stays open.
            db.close().await.unwrap();
        }
    }
}

fn run(bin: &str, dir: &TempDir, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(bin);
    command
        .current_dir(dir.path())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TENANCY_SECRET_KEY")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("secret.key"))
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run command");
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The README's path: the SQLite default master in the working folder, tenants made with
/// `createtenant`, the shared tables with `migratealltenants`, then `serve`.
#[tokio::test]
async fn sqlite_default_master_serves_database_table_and_cache_tenants() {
    let dir = TempDir::new();
    let create = env!("CARGO_BIN_EXE_createtenant");
    for (id, isolation) in [
        ("db_acme", "database"),
        ("db_globex", "database"),
        ("cache_acme", "cache"),
        ("cache_globex", "cache"),
        ("table_acme", "table"),
        ("table_globex", "table"),
    ] {
        let mut args = vec!["--no-input", "--id", id, "--name", id, "--isolation", isolation, "--migrate"];
        let db_name = format!("{id}_data");
        if isolation == "database" {
            args.extend(["--create-database", "--db-name", &db_name]);
        }
        run(create, &dir, &[], &args);
    }
    run(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &[], &[]);
    let master = format!("sqlite://{}/tenancy.db?mode=rwc", dir.path().display());
    let tenancy = Tenancy::builder(master).secret_key_file(dir.path().join("secret.key")).connect().await.unwrap();

    let server = Server::start(&dir, &[]);
    assert!(dir.path().join("tenancy.db").exists(), "the default master is ./tenancy.db");
    untenanted(&server);
    let (da, db) = relational_pair(&server, "db_acme", "db_globex", "database");
    cache_pair(&server, "cache_acme", "cache_globex");
    assert_storage(&tenancy, &[("db_acme", &da)], &["db_acme"]).await;
    assert_storage(&tenancy, &[("db_globex", &db)], &["db_globex"]).await;
    let (ta, tb) = relational_pair(&server, "table_acme", "table_globex", "table");
    assert_storage(&tenancy, &[("table_acme", &ta), ("table_globex", &tb)], &["table_acme", "table_globex"]).await;
    server.stop();
}

/// PostgreSQL master: two tenants in each of the four modes, served by one process.
#[tokio::test]
async fn postgres_master_serves_all_four_modes_side_by_side() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("secret.key")).connect().await.unwrap();
    let migrator = MigrateOnCreate::new(&example_app::Migrator);
    for (id, isolation) in [
        ("db_acme", Isolation::Database),
        ("db_globex", Isolation::Database),
        ("schema_acme", Isolation::Schema),
        ("schema_globex", Isolation::Schema),
        ("table_acme", Isolation::Table),
        ("table_globex", Isolation::Table),
        ("cache_acme", Isolation::Cache),
        ("cache_globex", Isolation::Cache),
    ] {
        let database = (isolation == Isolation::Database).then(|| pg.new_database("pw"));
        let new = NewTenant::new(id, format!("{id} Ltd"), isolation)
            .expect("a valid new tenant")
            .database(database)
            .migrate(true);
        tenancy.create_tenant(new, &migrator).await.unwrap();
    }
    run(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &[("DATABASE_URL", &pg.url)], &[]);

    // The tenants' cache namespaces on the test Redis, under a prefix of this test's own.
    let Some(redis) = tenancy_test_support::RedisPrefix::create("serve").await else { return };
    let server = Server::start(
        &dir,
        &[
            ("DATABASE_URL", &pg.url),
            ("TENANCY_CACHE_URL", &tenancy_test_support::redis_url()),
            ("TENANCY_CACHE_PREFIX", &redis.prefix),
        ],
    );
    untenanted(&server);
    let (da, db) = relational_pair(&server, "db_acme", "db_globex", "database");
    let (sa, sb) = relational_pair(&server, "schema_acme", "schema_globex", "schema");
    let (ta, tb) = relational_pair(&server, "table_acme", "table_globex", "table");
    cache_pair(&server, "cache_acme", "cache_globex");
    server.stop();

    // Every tenant's note sits in its own namespace (a Redis Cluster hash tag) on Redis.
    let mut conn = redis.conn.clone();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", redis.prefix)).query_async(&mut conn).await.expect("list keys");
    for tenant in ["db_acme", "db_globex", "schema_acme", "schema_globex", "table_acme", "table_globex"]
        .into_iter()
        .chain(["cache_acme", "cache_globex"])
    {
        let namespace = format!("{}:{{{tenant}}}:notes:", redis.prefix);
        assert_eq!(keys.iter().filter(|key| key.starts_with(&namespace)).count(), 1, "{tenant}: {keys:?}");
    }

    assert_storage(&tenancy, &[("db_acme", &da)], &["db_acme"]).await;
    assert_storage(&tenancy, &[("db_globex", &db)], &["db_globex"]).await;
    assert_storage(&tenancy, &[("schema_acme", &sa)], &["schema_acme"]).await;
    assert_storage(&tenancy, &[("schema_globex", &sb)], &["schema_globex"]).await;
    assert_storage(&tenancy, &[("table_acme", &ta), ("table_globex", &tb)], &["table_acme", "table_globex"]).await;
    // Nothing of the cache tenants reached the shared tables.
    let master = pg.connect().await;
    let owners = rows(&master, "SELECT DISTINCT tenant_id, tenant_id FROM projects ORDER BY 1").await;
    assert_eq!(
        owners,
        [("table_acme".to_owned(), "table_acme".to_owned()), ("table_globex".to_owned(), "table_globex".to_owned())]
    );
}

/// `serve` fails with the documented exit codes: 4 for an unreachable master, 1 for an
/// address it cannot listen on, 2 for a bad flag.
#[test]
fn serve_exit_codes() {
    let dir = TempDir::new();
    let serve = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_serve"));
        command.current_dir(dir.path()).args(args).env_remove("DATABASE_URL").env_remove("TENANCY_BIND");
        for (name, value) in env {
            command.env(name, value);
        }
        let out = command.stdin(Stdio::null()).output().expect("run serve");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) =
        serve(&[("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/app")], &["--bind", "127.0.0.1:0"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with("Error: Cannot connect to database server\n"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = serve(&[("TENANCY_BIND", &addr)], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("Error: cannot listen on {addr}\n  caused by: ")), "{stderr}");
    assert!(dir.path().join("tenancy.db").exists(), "the default master was opened first");

    let (code, _, stderr) = serve(&[], &["--bind", "localhost"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--bind"), "{stderr}");
}

/// The live registry across processes: `serve` under concurrent requests for tenants of
/// every relational mode while other processes suspend, resume and delete one more (a
/// database tenant). The change reaches `serve` within a second each time (503, then
/// 200, then 404), the deleted tenant's database, role and sessions are gone, and every
/// other request is answered with its own tenant's data throughout.
#[tokio::test]
async fn postgres_serve_follows_suspend_resume_and_delete_from_other_processes() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("secret.key")).connect().await.unwrap();
    let migrator = MigrateOnCreate::new(&example_app::Migrator);
    let (database, role) = (tenancy_test_support::unique_name("db"), tenancy_test_support::unique_name("u"));
    pg.track_database(&database);
    pg.track_role(&role);
    let login = tenancy::NewDatabase::create(database.clone())
        .login(role.clone(), tenancy::secrets::Password::new("pw"))
        .server("127.0.0.1", 5432);
    let new = NewTenant::new("live_db", "Live", Isolation::Database).unwrap().database(login).migrate(true);
    tenancy.create_tenant(new, &migrator).await.unwrap();
    let steady_tenants = ["live_schema", "live_table", "live_db2"];
    for id in steady_tenants {
        let isolation = match id {
            "live_schema" => Isolation::Schema,
            "live_table" => Isolation::Table,
            _ => Isolation::Database,
        };
        let mut new = NewTenant::new(id, id, isolation).unwrap().migrate(true);
        if isolation == Isolation::Database {
            new = new.database(pg.new_database("pw2"));
        }
        tenancy.create_tenant(new, &migrator).await.unwrap();
    }

    let server = Server::start(&dir, &[("DATABASE_URL", &pg.url)]);
    for id in steady_tenants {
        let (code, _) = server.post("/projects", Via::Header(id), json!({ "name": format!("{id} project") }));
        assert_eq!(code, 201, "{id}");
    }
    let sessions = || async {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1";
        tenancy_test_support::count(&pg.admin, sql, vec![role.as_str().into()]).await
    };
    let env = [("DATABASE_URL", pg.url.as_str()), ("TENANCY_ADMIN_URL", pg.url.as_str())];
    let status = |server: &Server| server.get("/projects", Via::Header("live_db")).0;
    // Polls `serve` until `want` or one second passed.
    let follows = |server: &Server, want: u16, what: &str| {
        let started = std::time::Instant::now();
        while status(server) != want {
            assert!(started.elapsed() < Duration::from_secs(1), "serve did not follow {what} within 1 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("serve followed {what} after {:?}", started.elapsed());
    };

    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (server, stop) = (&server, &stop);
                scope.spawn(move || {
                    let mut answered = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let id = steady_tenants[(answered + worker) % steady_tenants.len()];
                        let (code, body) = server.get("/tenant", Via::Header(id));
                        assert_eq!((code, body["id"].as_str()), (200, Some(id)), "{body}");
                        let (code, list) = server.get("/projects", Via::Header(id));
                        assert_eq!((code, names(&list)), (200, vec![format!("{id} project")]), "{list}");
                        answered += 1;
                    }
                    answered
                })
            })
            .collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(status(&server), 200);
            assert!(run(env!("CARGO_BIN_EXE_suspendtenant"), &dir, &env, &["live_db"]).status.success());
            follows(&server, 503, "the suspension");
            assert!(run(env!("CARGO_BIN_EXE_resumetenant"), &dir, &env, &["live_db"]).status.success());
            follows(&server, 200, "the resumption");
            let out = run(env!("CARGO_BIN_EXE_deletetenant"), &dir, &env, &["live_db", "--yes"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            follows(&server, 404, "the deletion");
        }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered: usize = workers.into_iter().map(|w| w.join().expect("the steady tenants' requests")).sum();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        answered
    });
    assert!(answered > 0);

    // serve's sessions to the deleted tenant's database are gone, and so are the
    // database and its role.
    assert_eq!(sessions().await, 0, "sessions of the deleted tenant's role remain");
    assert!(!pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", &database).await);
    assert!(!pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", &role).await);
    for id in steady_tenants {
        assert_eq!(server.get("/tenant", Via::Header(id)).0, 200);
    }
    server.stop();
}

/// Custom domains added and removed by other processes (`adddomain`, `removedomain`,
/// `deletetenant`) while `serve` runs: followed within a second through the live
/// registry, each domain serving its own tenant's rows in every relational mode, a domain
/// that is one tenant's and another's subdomain refused with 421, unknown hosts 404.
#[tokio::test]
async fn postgres_serve_follows_custom_domains_from_other_processes() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("secret.key")).connect().await.unwrap();
    let migrator = MigrateOnCreate::new(&example_app::Migrator);
    for (id, isolation) in
        [("dom_schema", Isolation::Schema), ("dom_table", Isolation::Table), ("dom_db", Isolation::Database)]
    {
        let database = (isolation == Isolation::Database).then(|| pg.new_database("pw"));
        let new = NewTenant::new(id, id, isolation).unwrap().database(database).migrate(true);
        tenancy.create_tenant(new, &migrator).await.unwrap();
    }
    let env = [("DATABASE_URL", pg.url.as_str())];
    let server = Server::start(&dir, &env);
    for id in ["dom_schema", "dom_table", "dom_db"] {
        let (code, _) = server.post("/projects", Via::Header(id), json!({ "name": format!("{id} project") }));
        assert_eq!(code, 201, "{id}");
    }
    // Polls until `host` answers `/tenant` with `want` (a status, and the tenant for 200).
    let follows = |host: &str, want: (u16, Option<&str>)| {
        let started = std::time::Instant::now();
        loop {
            let (code, body) = server.get("/tenant", Via::Domain(host));
            let id = body["id"].as_str().map(str::to_owned);
            if (code, id.as_deref()) == want {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{host}: {code} {body}, want {want:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    for (id, domain) in
        [("dom_schema", "Shop.Schema.TEST"), ("dom_table", "table.example.org"), ("dom_db", "bücher.test")]
    {
        run(env!("CARGO_BIN_EXE_adddomain"), &dir, &env, &[id, domain]);
    }
    follows("shop.schema.test", (200, Some("dom_schema")));
    follows("table.example.org", (200, Some("dom_table")));
    follows("xn--bcher-kva.test", (200, Some("dom_db")));
    for (id, domain) in
        [("dom_schema", "shop.schema.test"), ("dom_table", "table.example.org"), ("dom_db", "xn--bcher-kva.test")]
    {
        let (code, list) = server.get("/projects", Via::Domain(domain));
        assert_eq!((code, names(&list)), (200, vec![format!("{id} project")]), "{domain}: {list}");
        let (code, created) = server.post("/projects", Via::Domain(domain), json!({ "name": "by domain" }));
        assert_eq!((code, created["tenant_id"].as_str()), (201, Some(id)), "{created}");
        let (code, list) = server.get("/projects", Via::Header(id));
        assert_eq!((code, names(&list)), (200, vec![format!("{id} project"), "by domain".to_owned()]));
    }
    let (code, _) = server.get("/projects", Via::Domain("nobody.example.org"));
    assert_eq!(code, 404);

    // dom_table's subdomain under the base domain, claimed as dom_schema's domain.
    run(env!("CARGO_BIN_EXE_adddomain"), &dir, &env, &["dom_schema", &format!("dom_table.{BASE}")]);
    follows(&format!("dom_table.{BASE}"), (421, None));

    run(env!("CARGO_BIN_EXE_removedomain"), &dir, &env, &["shop.schema.test"]);
    follows("shop.schema.test", (404, None));
    let out = run(env!("CARGO_BIN_EXE_deletetenant"), &dir, &env, &["dom_db", "--yes"]);
    assert!(out.status.success());
    follows("xn--bcher-kva.test", (404, None));
    let master = pg.connect().await;
    let left = rows(&master, "SELECT domain, tenant_id FROM tenancy_domains ORDER BY domain").await;
    assert_eq!(
        left,
        [
            (format!("dom_table.{BASE}"), "dom_schema".to_owned()),
            ("table.example.org".to_owned(), "dom_table".to_owned())
        ]
    );
    server.stop();
}
