"""OpenAI wire models (pydantic), named after OpenAI's own schema."""
