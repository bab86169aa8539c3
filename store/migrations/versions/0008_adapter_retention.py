"""adapter versions: pinned (kept by retention) and pruned_at (files removed by retention)

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapterversion", schema=None) as batch_op:
        # Existing versions are not pinned; the server default fills them in.
        batch_op.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("pruned_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapterversion", schema=None) as batch_op:
        batch_op.drop_column("pruned_at")
        batch_op.drop_column("pinned")
