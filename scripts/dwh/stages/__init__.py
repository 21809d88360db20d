"""Pipeline stages. Each module has one public entry: run(conn, settings, ctx) -> StageResult."""
