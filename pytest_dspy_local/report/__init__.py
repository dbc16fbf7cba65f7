"""Reports built from typed results: terminal lines, JSON, Markdown and HTML. Never imports pytest."""
