//! Endpoints that answered `410 Gone`. The customer said the URL is gone for good, so
//! nothing more is sent there; but what the bridge accepted is never lost: the
//! endpoint's events stay pending (held) until an operator enables it again, or the
//! workflow gets another URL. Kept in the store so a restart and every bridge sharing
//! it agree.

use serde::Serialize;
use sqlx::FromRow;

use super::{Backend, Store, StoreError, now_ms, sqlite::args};

/// One disabled endpoint: since when, and why.
#[derive(Debug, Clone, Serialize, FromRow, PartialEq, Eq)]
pub(crate) struct DisabledEndpoint {
    pub url: String,
    pub disabled_at: i64,
    pub reason: String,
}

impl Store {
    /// Disables `url`; `true` when it was enabled until now.
    pub(crate) async fn disable_endpoint(
        &self,
        url: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO disabled_endpoints (url, disabled_at, reason) VALUES ($1, $2, $3)
                   ON CONFLICT (url) DO NOTHING";
        let done = match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![url.to_owned(), now_ms(), reason.to_owned()];
                db.pool.execute(sql, args).await?
            }
            Backend::Postgres(db) => sqlx::query(sql)
                .bind(url)
                .bind(now_ms())
                .bind(reason)
                .execute(&db.pool)
                .await?
                .rows_affected(),
        };
        Ok(done == 1)
    }

    /// Enables `url` again; `true` when it was disabled.
    pub(crate) async fn enable_endpoint(&self, url: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM disabled_endpoints WHERE url = $1";
        let done = match self.backend() {
            Backend::Sqlite(db) => db.pool.execute(sql, args![url.to_owned()]).await?,
            Backend::Postgres(db) => sqlx::query(sql)
                .bind(url)
                .execute(&db.pool)
                .await?
                .rows_affected(),
        };
        Ok(done == 1)
    }

    /// Every disabled endpoint, by URL.
    pub(crate) async fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        let sql = "SELECT url, disabled_at, reason FROM disabled_endpoints ORDER BY url";
        match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .all(sql, args![], |r| {
                        Ok(DisabledEndpoint {
                            url: r.get(0)?,
                            disabled_at: r.get(1)?,
                            reason: r.get(2)?,
                        })
                    })
                    .await
            }
            Backend::Postgres(db) => Ok(sqlx::query_as(sql).fetch_all(&db.pool).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_stores;

    #[tokio::test]
    async fn a_disabled_endpoint_stays_disabled_until_enabled_on_both_stores() {
        let (stores, _dir) = test_stores().await;
        for store in stores {
            let url = "http://127.0.0.1:9/hooks";
            assert!(store.disable_endpoint(url, "HTTP 410").await.unwrap());
            assert!(!store.disable_endpoint(url, "HTTP 410").await.unwrap());
            let other = store.as_another_instance();
            let listed = other.disabled_endpoints().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].url, url);
            assert_eq!(listed[0].reason, "HTTP 410");
            assert!(other.enable_endpoint(url).await.unwrap());
            assert!(!store.enable_endpoint(url).await.unwrap());
            assert!(store.disabled_endpoints().await.unwrap().is_empty());
        }
    }
}
