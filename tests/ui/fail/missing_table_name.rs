// Not a sea-orm model: there is no table name (and no `Entity`) to scope.

#[tenancy::tenant_scoped]
#[derive(Clone, Debug)]
pub struct Model {
    pub id: i32,
    pub tenant_id: String,
}

fn main() {}
