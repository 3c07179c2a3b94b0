"""Development entry: ``flask --app app run`` (the executor runs in this process)."""

from zumik import create_app

app = create_app(start_executor=True)
