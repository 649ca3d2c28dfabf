"""The demo's Jinja templates, one per (cloud, type, module version) in ``tf_template``.

They show the filters a template author uses (``hcl``, ``to_terraform_*``), values
printed inside strings, a loop over firewall rules, and a value the escaping must keep
from interpolating (``orders-db``'s description).
"""

__all__ = ["AZURE_STORAGE_TEMPLATE", "AZURE_VM_TEMPLATE", "EC2_TEMPLATE", "RDS_TEMPLATE"]

RDS_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
module "rds_{{ id }}" {
  source = "git::https://gitlab.example.com/platform/modules/aws-rds.git?ref=v{{ module_version }}"

  identifier        = {{ name | hcl }}
  engine            = {{ engine | hcl }}
  engine_version    = {{ engine_version | hcl }}
  instance_class    = {{ instance_class | hcl }}
  allocated_storage = {{ allocated_storage | hcl }}
  multi_az          = {{ multi_az | to_terraform_bool }}
  subnet_ids        = {{ subnet_ids | to_terraform_list }}

  tags = {
    Name        = "{{ name }}"
    Description = "{{ description }}"
    CostCenter  = "{{ cost_center }}"
    RequestedBy = "{{ requested_by }}"
  }
}
"""

EC2_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
resource "aws_security_group" "vm_{{ id }}" {
  name        = "{{ name }}-sg"
  description = {{ ("Ingress for " ~ name) | to_terraform_string }}
  vpc_id      = {{ vpc_id | to_terraform_string }}
{% for rule in sg_rules %}
  ingress {
    description = {{ rule.description | to_terraform_string }}
    protocol    = {{ rule.protocol | to_terraform_string }}
    from_port   = {{ rule.from_port | hcl }}
    to_port     = {{ rule.to_port | hcl }}
    cidr_blocks = {{ rule.cidr_blocks.split(",") | to_terraform_list }}
  }
{% endfor %}
}

resource "aws_instance" "vm_{{ id }}" {
  ami                    = {{ ami | to_terraform_string }}
  instance_type          = {{ instance_type | to_terraform_string }}
  subnet_id              = {{ subnet_id | to_terraform_string }}
  vpc_security_group_ids = [aws_security_group.vm_{{ id | hcl }}.id]

  tags = {
    Name = "{{ name }}"
  }
}
"""

AZURE_VM_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
module "vm_{{ id }}" {
  source = "git::https://gitlab.example.com/platform/modules/azure-vm.git?ref=v{{ module_version }}"

  name                = {{ name | to_terraform_string }}
  resource_group_name = {{ resource_group | to_terraform_string }}
  location            = {{ location | to_terraform_string }}
  size                = {{ vm_size | to_terraform_string }}
  admin_username      = {{ admin_username | to_terraform_string }}
  zones               = {{ zones.split(",") | to_terraform_list }}
}
"""

AZURE_STORAGE_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
resource "azurerm_storage_account" "sa_{{ id }}" {
  name                     = {{ account_name | hcl }}
  resource_group_name      = {{ resource_group | hcl }}
  location                 = {{ location | hcl }}
  account_tier             = {{ tier | hcl }}
  account_replication_type = {{ replication | hcl }}

  tags = {{ {"Name": name, "RequestedBy": requested_by} | hcl_map }}
}
"""
