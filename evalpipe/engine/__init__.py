"""Engines that produce completions (vLLM server, OpenAI-compatible endpoint, in-process
``vllm.LLM``) and the checks that ask vLLM itself; vLLM is imported lazily, never here."""
