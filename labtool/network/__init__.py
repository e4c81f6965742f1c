"""Step 05: networking (package marker; net-core owns this file and may replace it)."""
