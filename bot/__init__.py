"""The Slack face of tuneloop: Bolt listeners, Block Kit views and permissions.

Talks to serving (answers, feedback, admin) and store only. `bot.app.build_slack_app` builds the Bolt app;
`bot.app.attach_slack` mounts it on the service's FastAPI app at POST /slack/events.
"""
