"""The job queue: kinds of work, their requests and results, persistence and progress."""
