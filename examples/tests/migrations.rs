//! Migrations and entity round-trip on an in-memory SQLite database.

use example_app::entities::{comment, plan, project, task};
use example_app::{Migrator, SharedMigrator};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, Database, DatabaseConnection, QueryOrder};
use sea_orm_migration::MigratorTrait;

const TENANT: &str = "acme";

async fn memory_db() -> DatabaseConnection {
    Database::connect("sqlite::memory:").await.expect("connect to in-memory SQLite")
}

async fn table_exists(db: &DatabaseConnection, name: &str) -> bool {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
            [name.into()],
        ))
        .await
        .expect("query sqlite_master")
        .expect("one row");
    row.try_get::<i64>("", "n").expect("count") == 1
}

#[tokio::test]
async fn tenant_migrations_up_down_up_and_relations() {
    let db = memory_db().await;

    Migrator::up(&db, None).await.expect("first up");
    for table in ["projects", "tasks", "comments"] {
        assert!(table_exists(&db, table).await, "{table} after up");
    }
    assert!(!table_exists(&db, "plans").await, "plans is not a tenant table");

    Migrator::down(&db, None).await.expect("down");
    for table in ["projects", "tasks", "comments"] {
        assert!(!table_exists(&db, table).await, "{table} after down");
    }

    Migrator::up(&db, None).await.expect("second up");
    assert!(Migrator::get_pending_migrations(&db).await.expect("pending").is_empty());
    assert_eq!(Migrator::get_applied_migrations(&db).await.expect("applied").len(), 3);

    let now = ChronoUtc::now();
    let project = project::ActiveModel {
        tenant_id: Set(TENANT.to_owned()),
        name: Set("Website".to_owned()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("insert project");
    assert_eq!(project.name, "Website");

    let task = task::ActiveModel {
        tenant_id: Set(TENANT.to_owned()),
        project_id: Set(project.id),
        title: Set("Write landing page".to_owned()),
        done: Set(false),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("insert task");

    let comment = comment::ActiveModel {
        tenant_id: Set(TENANT.to_owned()),
        task_id: Set(task.id),
        body: Set("Looks good".to_owned()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("insert comment");

    // project -> tasks (has_many), eager.
    let with_tasks =
        project::Entity::find().find_with_related(task::Entity).all(&db).await.expect("projects with tasks");
    assert_eq!(with_tasks.len(), 1);
    let (p, tasks) = &with_tasks[0];
    assert_eq!(p.id, project.id);
    assert_eq!(p.tenant_id, TENANT);
    assert_eq!(p.created_at.timestamp(), now.timestamp());
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Write landing page");
    assert!(!tasks[0].done);
    assert_eq!(tasks[0].project_id, project.id);

    // task -> comments (has_many), lazy.
    let comments =
        task.find_related(comment::Entity).order_by_asc(comment::Column::Id).all(&db).await.expect("comments of task");
    assert_eq!(comments, vec![comment.clone()]);
    assert_eq!(comments[0].body, "Looks good");
    assert_eq!(comments[0].tenant_id, TENANT);

    // comment -> task -> project (belongs_to).
    let parent_task = comment.find_related(task::Entity).one(&db).await.expect("task of comment").expect("task exists");
    assert_eq!(parent_task, task);
    let parent_project =
        parent_task.find_related(project::Entity).one(&db).await.expect("project of task").expect("project exists");
    assert_eq!(parent_project.id, project.id);

    // ON DELETE CASCADE is declared inside CREATE TABLE, so it works on SQLite.
    project::Entity::delete_by_id(project.id).exec(&db).await.expect("delete project");
    assert_eq!(task::Entity::find().count(&db).await.expect("count tasks"), 0);
    assert_eq!(comment::Entity::find().count(&db).await.expect("count comments"), 0);
}

#[tokio::test]
async fn shared_migrator_seeds_plans() {
    let db = memory_db().await;

    // Both migrators can share one schema: they keep separate histories.
    Migrator::up(&db, None).await.expect("tenant up");
    SharedMigrator::up(&db, None).await.expect("shared up");
    assert!(Migrator::get_pending_migrations(&db).await.expect("pending").is_empty());

    assert_eq!(plan::Entity::find().count(&db).await.expect("count plans"), 3);
    let codes: Vec<String> = plan::Entity::find()
        .order_by_asc(plan::Column::Id)
        .all(&db)
        .await
        .expect("plans")
        .into_iter()
        .map(|p| p.code)
        .collect();
    assert_eq!(codes, ["free", "pro", "enterprise"]);
    let pro = plan::Entity::find()
        .filter(plan::Column::Code.eq("pro"))
        .one(&db)
        .await
        .expect("find pro")
        .expect("pro exists");
    assert_eq!(pro.price_cents, 1_900);

    SharedMigrator::down(&db, None).await.expect("shared down");
    assert!(!table_exists(&db, "plans").await);
    assert!(table_exists(&db, "projects").await, "tenant tables untouched");
    SharedMigrator::up(&db, None).await.expect("shared up again");
    assert_eq!(plan::Entity::find().count(&db).await.expect("count plans"), 3);
}
