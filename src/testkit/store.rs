//! An empty store with the daemon's schema, for a bench that seeds its own rows before
//! it starts the daemon: the schema comes from the daemon's own migrations.

/// Creates the store `url` names (a SQLite file, or a PostgreSQL database it creates)
/// and applies every migration, then closes it.
pub async fn create(url: &str) -> Result<(), String> {
    let store = crate::store::Store::open(url, 2)
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(())
}
