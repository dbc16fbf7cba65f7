"""Model backends: embedded (llama.cpp in-process), ollama, openai-compatible."""
