//! Discovery (ETSI GS CIM 009 clause 5.7): which entity types and attributes a connector holds,
//! as far as the caller may see them. A type the caller may not read, and an attribute outside its
//! allow-list, does not exist for it; counts and attribute types come from the entities it may see.

use std::collections::{BTreeMap, BTreeSet};

use civitas_auth::authorizer::{Authorized, Names};
use civitas_http::Problem;
use civitas_ngsild::entity::Entity;
use civitas_store::EntityQuery;

use crate::entities::{Entities, store_problem};

/// An entity type and the attributes its entities have (clause 5.2.25 `EntityType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSummary {
    pub name: String,
    pub attributes: Vec<String>,
}

/// An entity type in detail (clause 5.2.26 `EntityTypeInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDetail {
    pub name: String,
    pub entity_count: u64,
    /// Attribute name → the attribute types (`Property`, `Relationship`, …) it has.
    pub attributes: BTreeMap<String, BTreeSet<&'static str>>,
}

/// An attribute and the entity types that have it (clause 5.2.28 `Attribute`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeSummary {
    pub name: String,
    pub types: Vec<String>,
}

/// An attribute in detail (clause 5.2.28 `Attribute`, with `attributeCount` and
/// `attributeTypes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDetail {
    pub name: String,
    /// How many (visible) entities have it.
    pub count: u64,
    pub attribute_types: BTreeSet<&'static str>,
    pub types: BTreeSet<String>,
}

fn type_visible(auth: &Authorized, name: &str) -> bool {
    let types = [name.to_owned()];
    auth.covers(&types)
        && auth
            .check_names(Names {
                entity_types: &types,
                ..Names::default()
            })
            .is_ok()
}

fn attribute_visible(auth: &Authorized, name: &str) -> bool {
    let attributes = [name.to_owned()];
    auth.allows_attribute(name)
        && auth
            .check_names(Names {
                attributes: &attributes,
                ..Names::default()
            })
            .is_ok()
}

impl Entities {
    /// Every entity type the caller may see, in order, with its visible attributes.
    pub async fn types(&self, auth: &Authorized) -> Result<Vec<TypeSummary>, Problem> {
        let tenant = auth.tenant();
        let counts = self
            .store
            .type_counts(tenant)
            .await
            .map_err(store_problem)?;
        let pairs = self
            .store
            .type_attribute_pairs(tenant)
            .await
            .map_err(store_problem)?;
        let mut out = Vec::new();
        for (name, _) in counts {
            if !type_visible(auth, &name) {
                continue;
            }
            let attributes = pairs
                .iter()
                .filter(|(t, a)| *t == name && attribute_visible(auth, a))
                .map(|(_, a)| a.clone())
                .collect();
            out.push(TypeSummary { name, attributes });
        }
        let names: Vec<String> = out.iter().map(|t| t.name.clone()).collect();
        auth.note_types(&names);
        auth.note_count(out.len() as u64);
        Ok(out)
    }

    /// One entity type in detail, if the caller may see entities of it.
    pub async fn type_detail(
        &self,
        auth: &Authorized,
        name: &str,
    ) -> Result<Option<TypeDetail>, Problem> {
        auth.note_types(&[name.to_owned()]);
        if !type_visible(auth, name) {
            return Ok(None);
        }
        let mut detail = TypeDetail {
            name: name.to_owned(),
            entity_count: 0,
            attributes: BTreeMap::new(),
        };
        let query = EntityQuery {
            types: vec![name.to_owned()],
            ..EntityQuery::default()
        };
        self.scan(auth, query, |entity| {
            detail.entity_count += 1;
            for (attribute, instances) in &entity.attributes {
                let kinds = detail.attributes.entry(attribute.clone()).or_default();
                kinds.extend(instances.iter().map(|i| i.value.type_name()));
            }
        })
        .await?;
        auth.note_count(detail.entity_count);
        Ok((detail.entity_count > 0).then_some(detail))
    }

    /// Every attribute the caller may see, in order, with the visible types that have it.
    pub async fn attributes(&self, auth: &Authorized) -> Result<Vec<AttributeSummary>, Problem> {
        let pairs = self
            .store
            .type_attribute_pairs(auth.tenant())
            .await
            .map_err(store_problem)?;
        let mut by_attribute: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (entity_type, attribute) in pairs {
            if type_visible(auth, &entity_type) && attribute_visible(auth, &attribute) {
                by_attribute.entry(attribute).or_default().push(entity_type);
            }
        }
        let out: Vec<AttributeSummary> = by_attribute
            .into_iter()
            .map(|(name, mut types)| {
                types.sort();
                types.dedup();
                AttributeSummary { name, types }
            })
            .collect();
        auth.note_count(out.len() as u64);
        Ok(out)
    }

    /// One attribute in detail, if the caller may see it on some entity.
    pub async fn attribute_detail(
        &self,
        auth: &Authorized,
        name: &str,
    ) -> Result<Option<AttributeDetail>, Problem> {
        if !attribute_visible(auth, name) {
            return Ok(None);
        }
        let mut detail = AttributeDetail {
            name: name.to_owned(),
            count: 0,
            attribute_types: BTreeSet::new(),
            types: BTreeSet::new(),
        };
        let query = EntityQuery {
            attributes: vec![name.to_owned()],
            ..EntityQuery::default()
        };
        self.scan(auth, query, |entity| {
            let Some(instances) = entity.attributes.get(name) else {
                return;
            };
            detail.count += 1;
            detail
                .attribute_types
                .extend(instances.iter().map(|i| i.value.type_name()));
            detail.types.extend(entity.types.iter().cloned());
        })
        .await?;
        detail.types.retain(|t| type_visible(auth, t));
        auth.note_count(detail.count);
        Ok((detail.count > 0).then_some(detail))
    }

    /// Calls `visit` with every entity matching `query` that the caller may see, as it may see
    /// it, a page at a time.
    async fn scan(
        &self,
        auth: &Authorized,
        mut query: EntityQuery,
        mut visit: impl FnMut(&Entity),
    ) -> Result<(), Problem> {
        const PAGE: u32 = 1_000;
        query.limit = PAGE;
        query.offset = 0;
        query.count = false;
        loop {
            let (entities, _) = self.query_visible(auth, &query).await?;
            for entity in &entities {
                visit(entity);
            }
            if entities.len() < PAGE as usize {
                return Ok(());
            }
            query.offset += PAGE;
        }
    }
}
