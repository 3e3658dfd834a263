"""Who is served next and when: the fair claim order (fairness) and a job's start and finish forecast
(estimate)."""
