"""Models: one loader for every stage (and the teacher/student pair with its alignment), and the tiny model factory."""
