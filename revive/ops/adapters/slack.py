"""Slack as a declared chat tool: revive's chat sink is configured from the environment
(``REVIVE_SLACK_BOT_TOKEN``, ``REVIVE_SLACK_CHANNEL``), so the topology entry only records that the
tool exists and where its replicas are, for the readiness check's replica rules."""

from revive.ops.plugins import Adapter
from revive.topology.models import ToolKind

ADAPTER = Adapter(name="slack", kinds={ToolKind.chat: None},
                  summary="Slack (chat): declared for the readiness check; set up from the env")
