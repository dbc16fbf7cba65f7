"""Model access: backends (embedded llama.cpp, OpenAI-compatible, Ollama), the DSPy engine
that adapts them, the answer cache, and the run's task and proposal models. Never imports pytest.
"""
