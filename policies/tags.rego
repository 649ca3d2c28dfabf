# Required tags on resources that carry them: Name (denied without it) and CostCenter
# (a warning: finance asks, reviewers decide). Modules are checked when they pass tags.
package tfgen.tags

tagged_types := {
	"aws_instance", "aws_db_instance", "aws_s3_bucket", "aws_ebs_volume",
	"azurerm_storage_account", "azurerm_linux_virtual_machine", "azurerm_windows_virtual_machine",
}

tagged contains {"path": path, "label": label, "tags": tags} if {
	some path, doc in input.files
	some kind in tagged_types
	some name, bodies in doc.resource[kind]
	some body in bodies
	label := concat(".", [kind, name])
	tags := object.get(body, "tags", {})
}

tagged contains {"path": path, "label": label, "tags": body.tags} if {
	some path, doc in input.files
	some name, bodies in doc.module
	some body in bodies
	body.tags
	label := concat(".", ["module", name])
}

blank(tags, key) if not tags[key]

blank(tags, key) if trim_space(sprintf("%v", [tags[key]])) in {"", "None", "null"}

deny contains {"rule": "required-tag-name", "msg": msg} if {
	some item in tagged
	blank(item.tags, "Name")
	msg := concat("", [item.path, ": ", item.label, " has no Name tag"])
}

warn contains {"rule": "required-tag-costcenter", "msg": msg} if {
	some item in tagged
	blank(item.tags, "CostCenter")
	msg := concat("", [item.path, ": ", item.label, " has no CostCenter tag"])
}
