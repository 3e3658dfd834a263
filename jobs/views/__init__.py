"""Read-side views of a job: its result lines and the results page's rows."""
