"""The embedded "shapes" world: GenEval-like prompts, a renderer and a programmatic evaluator."""
