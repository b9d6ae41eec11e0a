"""Who is who on the sandbox portal: its host, webhooks, users, application and smart-process ids.

Plain constants, importable without the emulator (the `--sandbox` server names its webhook at start-up and
imports the emulator only on the first call).
"""

SANDBOX_HOST = "sandbox.bitrix24.test"
SANDBOX_USER_ID = 1
SANDBOX_WEBHOOK_CODE = "sbx7f3k9q2w8e5r1t6y4"
READONLY_USER_ID = 7
READONLY_WEBHOOK_CODE = "sbx-readonly-7c2d"
EXTRANET_USER_ID = 9
EXTRANET_WEBHOOK_CODE = "sbx-extranet-9a1b"
NOSCOPE_USER_ID = 11
NOSCOPE_WEBHOOK_CODE = "sbx-noscope-11e4"
# A person without a webhook, reached only by signing in through OAuth: reads everything but the Projects smart
# process, and may not delete companies.
SALES_USER_ID = 3
SANDBOX_CLIENT_ID = "local.sbx0000000000001"
SANDBOX_CLIENT_SECRET = "sbxClientSecret0123456789abcdef"
CONTRACTS_TYPE_ID = 1038
PROJECTS_TYPE_ID = 1046
