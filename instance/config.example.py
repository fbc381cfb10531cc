# Copy to instance/config.py and edit. Every key can also come from the environment as
# HOOKLINE_<KEY> (which wins over this file). See web/config.py for all keys and defaults.

# DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hookline"
# PUBLIC_URL = "https://hooks.example.com"      # what inbound URLs are shown with
# HOST = "127.0.0.1"
# PORT = 8080
# RUNNER_THREADS = 32
# RUNNER_PROCESS = "auto"                        # serve: runner in a child process with 2+ CPUs; True / False
# MAX_BODY_BYTES = 10 * 1024 * 1024
# OUTBOUND_ALLOWLIST = ["10.0.0.0/8"]            # private destinations outbound calls may reach
