//! Table isolation on a PostgreSQL master: what [`crate::rls::audit`] finds, and views over
//! scoped tables whose owner's rights reach past the row-security policies.

use sea_orm::ConnectionTrait;

use super::{Finding, json_list, pg};
use crate::rls::{AuditKind, audit};
use crate::{Backend, Result, Tenancy, scoped_models};

pub(super) async fn check(tenancy: &Tenancy) -> Result<Vec<Finding>> {
    if tenancy.backend() != Backend::Postgres {
        return Ok(Vec::new());
    }
    let master = tenancy.master();
    let mut findings = Vec::new();
    for hole in audit(master).await? {
        findings.push(match hole.kind {
            // Judged below, by whose rights the view reads with.
            AuditKind::View => continue,
            AuditKind::Role => Finding::UnsafeRole { role: hole.object, problem: hole.detail },
            _ => Finding::RowSecurity { object: hole.object, problem: hole.detail },
        });
    }

    let scoped: Vec<&str> =
        scoped_models()?.iter().filter(|model| model.scope().table_column().is_some()).map(|m| m.table()).collect();
    if scoped.is_empty() {
        return Ok(findings);
    }
    // Views of any schema reading a scoped table directly or through other views (their
    // rewrite rules' dependencies), that are not `security_invoker`, with their owner's
    // powers and whether the owner owns a table the view reads.
    // language=PostgreSQL
    let sql = "WITH RECURSIVE dependents(oid, table_owner) AS ( \
                 SELECT c.oid, c.relowner FROM pg_catalog.pg_class c \
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') \
                   AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
                 UNION \
                 SELECT r.ev_class, d.table_owner FROM dependents d \
                 JOIN pg_catalog.pg_depend dep ON dep.refclassid = 'pg_class'::regclass AND dep.refobjid = d.oid \
                   AND dep.classid = 'pg_rewrite'::regclass \
                 JOIN pg_catalog.pg_rewrite r ON r.oid = dep.objid \
                 WHERE r.ev_class <> d.oid) \
               SELECT n.nspname::text, c.relname::text, o.rolname::text, o.rolsuper, o.rolbypassrls, \
                 bool_or(c.relowner = d.table_owner) \
               FROM dependents d JOIN pg_catalog.pg_class c ON c.oid = d.oid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_roles o ON o.oid = c.relowner \
               WHERE c.relkind = 'v' AND NOT EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) x \
                 WHERE x.option_name = 'security_invoker' AND lower(x.option_value) IN ('true', 'on', 'yes', '1')) \
               GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2";
    for row in master.query_all_raw(pg(sql, vec![json_list(scoped)])).await? {
        let (schema, name, owner): (String, String, String) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
        let (superuser, bypass, owns_table): (bool, bool, bool) =
            (row.try_get_by_index(3)?, row.try_get_by_index(4)?, row.try_get_by_index(5)?);
        let reason = if superuser {
            "a superuser, to whom row security does not apply"
        } else if bypass {
            "a role with BYPASSRLS"
        } else if owns_table {
            "the owner of a scoped table it reads"
        } else {
            // Any other owner's reads are held back by the forced policies.
            continue;
        };
        findings.push(Finding::ViewBypassesRowSecurity {
            view: format!("{schema}.{name}"),
            owner,
            reason: reason.to_owned(),
        });
    }
    Ok(findings)
}
