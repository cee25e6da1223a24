pub async fn run(
    _c: &crate::config::Config,
    _w: Option<&str>,
    _t: std::time::Duration,
) -> anyhow::Result<()> {
    Ok(())
}
