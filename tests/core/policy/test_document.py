"""The policy input document: HCL as JSON (every block a list), and the design's shape."""

from __future__ import annotations

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.policy import hcl_document, policy_input

TWO_GROUPS = '''resource "aws_security_group" "one" {
  name = "one"
  tags = {
    Name = "one"
  }
  ingress {
    from_port = 22
  }
  lifecycle { create_before_destroy = true }
}

resource "aws_security_group" "five" {
  ingress {
    from_port = 1
  }
  ingress {
    from_port = 2
  }
  dynamic "egress" {
    for_each = var.x
    content {
      from_port = 3
    }
  }
  user_data = <<EOT
ingress {
EOT
}

locals {
  rules = [{
    port = 1
  }]
}

module "m" {
  source  = "x"
  ingress = { from_port = 9 }
}
'''


def test_every_block_is_a_list_whatever_its_count_and_attributes_stay_as_written() -> None:
    doc = hcl_document(TWO_GROUPS)
    (one,) = doc["resource"]["aws_security_group"]["one"]
    assert one["ingress"] == [{"from_port": 22}]
    assert one["lifecycle"] == [{"create_before_destroy": True}]
    assert one["tags"] == {"Name": "one"}  # an attribute object, not a block
    (five,) = doc["resource"]["aws_security_group"]["five"]
    assert five["ingress"] == [{"from_port": 1}, {"from_port": 2}]
    assert five["dynamic"]["egress"][0]["content"] == [{"from_port": 3}]
    assert five["user_data"] == "ingress {\n"
    assert doc["locals"] == [{"rules": [{"port": 1}]}]
    assert doc["module"]["m"] == [{"source": "x", "ingress": {"from_port": 9}}]


def test_strings_read_back_as_stored() -> None:
    doc = hcl_document('locals {\n  a = "q\\"uote $${x} %%{y}\\nz \\\\"\n}\n')
    assert doc["locals"][0]["a"] == 'q"uote ${x} %{y}\nz \\'


def test_the_input_document_has_the_designs_shape() -> None:
    from decimal import Decimal

    resource = ResourceRequest("aws", "rds", 42, {"name": "db", "allocated_storage": Decimal(20),
                                                  "ratio": Decimal("0.5")},
                               [{"from_port": 22, "cidr_blocks": "0.0.0.0/0"}])
    template = Template("aws", "rds", "1.2.0", "x")
    doc = policy_input(resource, [RenderedFile("aws/rds/db.tf", 'locals {\n  a = 1\n}\n')],
                       template, "alice")
    assert doc == {
        "request": {"name": "db", "allocated_storage": 20, "ratio": 0.5, "cloud_id": "aws",
                    "resource_type": "rds", "request_id": 42,
                    "sg_rules": [{"from_port": 22, "cidr_blocks": "0.0.0.0/0"}]},
        "files": {"aws/rds/db.tf": {"locals": [{"a": 1}]}},
        "template": {"ref": "aws/rds@1.2.0", "sha256": template.sha256},
        "owner": "alice",
    }

