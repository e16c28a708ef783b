"""Extensions: the public API for authors, the manager that runs their hooks, installs."""
