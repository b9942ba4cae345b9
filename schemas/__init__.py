"""Entity declarations: pure data from which models, SQL and DDL are derived."""
